package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// commandFlags returns the flag set of a command that prints usage, and
// its errors, to stderr.
func commandFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs
}

// parseArgs parses the flags of fs wherever they stand among args, and
// returns the other arguments. code is -1 to go on, or the exit code of a
// request for help (0) or a bad flag (2).
func parseArgs(fs *flag.FlagSet, args []string) (positional []string, code int) {
	for rest := args; ; rest = fs.Args()[1:] {
		if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
			return nil, 0
		} else if err != nil {
			return nil, 2
		}
		if fs.NArg() == 0 {
			return positional, -1
		}
		positional = append(positional, fs.Arg(0))
	}
}
