package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	loamproto "github.com/loamhq/loam/proto"
)

const protoUsage = `Usage:
  loam proto export [--check] DIR

Writes Loam's .proto files (loam/options/v1/options.proto) under DIR, at
their import paths, so that a service's buf workspace or protoc -I DIR
resolves

  import "loam/options/v1/options.proto";

without a schema registry. Do not generate code for them: their Go code is
github.com/loamhq/loam/proto/loam/options/v1, which the service imports.
With buf, make DIR a module of the workspace and generate only the
service's own module:

  # buf.yaml                        # buf.gen.yaml
  version: v2                       version: v2
  modules:                          inputs:
    - path: proto                     - directory: proto
    - path: third_party/loam        plugins: ...

--check writes nothing and exits 1 when a file in DIR differs from this
Loam's, so CI notices an export older than the Loam in go.mod.
`

// exportHeader marks an exported file as a copy.
const exportHeader = "// Exported by `loam proto export` from github.com/loamhq/loam %s. Do not edit,\n" +
	"// and do not generate code for this file: import its Go package instead.\n\n"

func runProto(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprint(stderr, protoUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	fl := flag.NewFlagSet("loam proto export", flag.ContinueOnError)
	fl.SetOutput(stderr)
	check := fl.Bool("check", false, "fail when DIR holds other contents than this Loam's files")
	fl.Usage = func() { fmt.Fprint(stderr, protoUsage) }
	if err := fl.Parse(args[1:]); err != nil {
		return 2
	}
	if fl.NArg() != 1 {
		fmt.Fprint(stderr, protoUsage)
		return 2
	}
	stale, err := exportProtos(fl.Arg(0), *check, stdout)
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "loam proto export:", err)
		return 1
	case len(stale) > 0:
		fmt.Fprintf(stderr, "loam proto export --check: %s differ from Loam %s; run loam proto export %s\n", strings.Join(stale, ", "), version(), fl.Arg(0))
		return 1
	}
	return 0
}

// exportProtos writes (or, with check, compares) Loam's .proto files under
// dir, and returns the files that differed.
func exportProtos(dir string, check bool, stdout io.Writer) ([]string, error) {
	var stale []string
	err := fs.WalkDir(loamproto.Files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := loamproto.Files.ReadFile(name)
		if err != nil {
			return err
		}
		want := append([]byte(fmt.Sprintf(exportHeader, version())), body...)
		path := filepath.Join(dir, filepath.FromSlash(name))
		if check {
			if have, err := os.ReadFile(path); err != nil || !bytes.Equal(have, want) {
				stale = append(stale, path)
			}
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", path)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return stale, err
}
