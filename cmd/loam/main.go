// Command loam is the Loam command-line tool for service teams and reviewers.
//
// Usage:
//
//	loam version   print the version of Loam this binary was built from
//	loam help      print this help
//
// More commands (config validate/explain/diff, catalog, new, doctor) arrive
// with the packages they inspect; each one is listed here when it works.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

const usage = `loam is the command-line tool of the Loam SDK.

Usage:
  loam version   print the version of Loam this binary was built from
  loam help      print this help
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code:
// 0 on success, 2 on a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version":
		fmt.Fprintln(stdout, "loam", version())
		return 0
	default:
		fmt.Fprintf(stderr, "loam: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// version reports the module version of Loam in the running binary, or
// "(devel)" when it was built from a work tree.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" {
		return "(devel)"
	}
	return info.Main.Version
}
