package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/loamhq/loam/cmd/loam/internal/scaffold"
)

const newUsage = `Usage:
  loam new service [--module PATH] [--loam DIR] [--generate] NAME [DIR]

Writes a new service built on Loam into DIR (default ./NAME), which must be
empty or not exist, as a Go module of its own:

  proto/NAME/v1/NAME.proto   the contract, with access, service and event options
  third_party/loam/          Loam's options, which the contract imports
  buf.yaml, buf.gen.yaml     lint STANDARD + COMMENTS + Loam's rules; breaking FILE + Loam's
  tools/go.mod               buf, protoc plugins, buf-plugin-loam and loam as go tools,
                             at the versions Loam uses
  internal/server/           the handlers on service.New, and a test on loamtest
                             of allowed, denied and unauthenticated calls
  main.go, config/           the command; development (on loam dev issuer),
                             staging and production configuration
  scripts/                   buf, generate and ci; README.md says what each does

NAME is a lower-case identifier (orders, order_history): the proto package
is NAME.v1, the permissions NAME.create and NAME.read, the audience
NAME-api.

  --module PATH   the Go module path (default example.com/NAME)
  --loam DIR      require Loam from the work tree in DIR, through replace
                  directives, rather than this loam's version
  --generate      then tidy the tools module, generate the Go code and tidy
                  the module (needs the Go module proxy), so that go test
                  passes at once; without it, the command prints those steps
`

func runNew(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "service" {
		fmt.Fprint(stderr, newUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		if len(args) > 0 {
			fmt.Fprintf(stderr, "\nloam new: unknown kind %q; loam new makes a service\n", args[0])
		}
		return 2
	}
	fs := commandFlags("loam new service", newUsage, stderr)
	module := fs.String("module", "", "Go module `path` of the service")
	loamDir := fs.String("loam", "", "Loam work tree `DIR` to require through replace directives")
	generate := fs.Bool("generate", false, "tidy, generate and tidy after writing")
	pos, code := parseArgs(fs, args[1:])
	if code >= 0 {
		return code
	}
	if len(pos) == 0 || len(pos) > 2 {
		fmt.Fprintln(stderr, "loam new service: want a NAME and at most one DIR")
		fmt.Fprint(stderr, newUsage)
		return 2
	}
	p := scaffold.Params{Name: pos[0], Module: *module, LoamVersion: version()}
	dir := p.Name
	if len(pos) == 2 {
		dir = pos[1]
	}
	if *loamDir != "" {
		abs, err := loamWorkTree(*loamDir)
		if err != nil {
			fmt.Fprintln(stderr, "loam new service: --loam:", err)
			return 2
		}
		p.LoamDir = abs
	} else if !strings.HasPrefix(p.LoamVersion, "v") {
		fmt.Fprintf(stderr, "loam new service: this loam was built from a work tree (version %s), so there is no released Loam to require;\n"+
			"pass --loam with the directory of that work tree, or install a released loam (go install github.com/loamhq/loam/cmd/loam@latest)\n", p.LoamVersion)
		return 2
	}
	if err := p.Validate(); err != nil {
		fmt.Fprintln(stderr, "loam new service:", err)
		return 2
	}
	files, err := scaffold.Write(dir, p)
	if err != nil {
		fmt.Fprintln(stderr, "loam new service:", err)
		return 1
	}
	if _, err := exportProtos(filepath.Join(dir, "third_party", "loam"), false, io.Discard); err != nil {
		fmt.Fprintln(stderr, "loam new service: exporting Loam's options:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote service %s in %s: %s and Loam's options in third_party/loam\n", p.Name, dir, strings.Join(files, ", "))
	if !*generate {
		fmt.Fprintf(stdout, "\nNext, to generate its code and check it (the first run downloads and builds buf):\n\n  cd %s\n", dir)
		for _, s := range setupSteps {
			fmt.Fprintf(stdout, "  %s\n", s.show)
		}
		fmt.Fprint(stdout, "  go test ./...\n\nREADME.md lists the other commands.\n")
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := setup(ctx, dir, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "loam new service:", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nReady: cd %s && go test ./...\nREADME.md lists the other commands.\n", dir)
	return 0
}

// setupSteps make a written service build: the tools module's go.sum,
// the generated code (with buf from the tools module), then the module's
// requirements, which the generated code's imports decide.
var setupSteps = []struct {
	show string // the command as the user types it in the service's root
	dir  string // where it runs, relative to the root
	args []string
}{
	{"(cd tools && go mod tidy -e)", "tools", []string{"go", "mod", "tidy", "-e"}},
	{"scripts/generate", ".", []string{"scripts/generate"}},
	{"go mod tidy", ".", []string{"go", "mod", "tidy"}},
}

// setup runs setupSteps in the service at dir, showing each and its
// output.
func setup(ctx context.Context, dir string, stdout, stderr io.Writer) error {
	for _, s := range setupSteps {
		fmt.Fprintf(stdout, "\n$ %s\n", s.show)
		cmd := exec.CommandContext(ctx, s.args[0], s.args[1:]...)
		cmd.Dir = filepath.Join(dir, s.dir)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s (in %s): %w", s.show, dir, err)
		}
	}
	return nil
}

// loamWorkTree returns the absolute path of dir after checking that it
// holds Loam's module and its buf plugin's.
func loamWorkTree(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for _, m := range []struct{ file, module string }{
		{"go.mod", scaffold.LoamModule},
		{filepath.Join("cmd", "buf-plugin-loam", "go.mod"), scaffold.PluginModule},
	} {
		b, err := os.ReadFile(filepath.Join(abs, m.file))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("%s is not a Loam work tree: it has no %s", dir, m.file)
			}
			return "", err
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if strings.TrimSpace(first) != "module "+m.module {
			return "", fmt.Errorf("%s is not a Loam work tree: %s is not module %s", dir, m.file, m.module)
		}
	}
	return abs, nil
}
