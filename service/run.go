package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/loamhq/loam/config"
)

// Configuration is a service's own configuration type, as Run loads it: a
// struct that embeds Config, whose ServiceConfig method it promotes, and
// adds the service's own sections.
type Configuration interface {
	// ServiceConfig returns the embedded Config.
	ServiceConfig() Config
}

// ServiceConfig returns c. Through embedding, it makes a service's own
// configuration type a Configuration.
func (c Config) ServiceConfig() Config { return c }

// Builder builds a service's server from its configuration. It has the
// shape of New, so a service's constructor, such as
// func NewServer(ctx context.Context, cfg Config, opts ...service.Option),
// is one as it is. Run passes it no options.
type Builder[C Configuration] func(ctx context.Context, cfg C, opts ...Option) (*Server, error)

// RunOption configures Run and Main.
type RunOption interface{ apply(*runOptions) }

type runOption func(*runOptions)

func (f runOption) apply(o *runOptions) { f(o) }

type runOptions struct {
	dir string
}

// WithConfigDir sets the directory of the configuration files that --config
// defaults to; without it, "config".
func WithConfigDir(dir string) RunOption {
	return runOption(func(o *runOptions) { o.dir = dir })
}

// Run runs a service as a command: it parses args (the command line without
// the program's name), loads configuration type C for the environment that
// --env (else $LOAM_ENV, else development) names, builds the server with
// build, and serves it until ctx ends or SIGTERM or SIGINT arrives. Changes
// to the configuration files are loaded and handed to Server.Reload, which
// applies what can change without a restart; an invalid change is logged
// and the last good configuration stays.
//
// Its flags: --env; --config, the directory of the files (default
// "config", or WithConfigDir); and --service.listen_addr and
// --service.admin_addr. Any flag named after a key, such as
// --authn.leeway=1m, overrides it, and so does an environment variable of
// the service's name, upper-cased, such as CAPTURES_SERVICE__LISTEN_ADDR
// for name "captures".
//
// Run returns the first error: a flag, a configuration problem (naming the
// key and the file and line it came from), build's error (a nil server is
// one), or Serve's, ErrCallsCut included. -h prints the flags and returns
// nil. Run serves one server; call it once per process.
func Run[C Configuration](ctx context.Context, name string, args []string, build Builder[C], opts ...RunOption) error {
	o := runOptions{dir: "config"}
	for _, opt := range opts {
		opt.apply(&o)
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.String("env", "", "environment: development, staging or production (default $LOAM_ENV, else development)")
	dir := fs.String("config", o.dir, "directory of the configuration files")
	fs.String("service.listen_addr", "", "gRPC address, overriding the configuration")
	fs.String("service.admin_addr", "", "admin HTTP address, overriding the configuration")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err} // the flag package has printed it, and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q: configuration is set with flags such as --service.listen_addr=ADDR\n", fs.Arg(0))
		fs.Usage()
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	// The watch loads the configuration the server is built from, so that
	// a change made while it is built is not missed: it is held, and
	// applied once the server exists.
	var mu sync.Mutex
	var srv *Server
	var pending *C       // a change that came while the server was built
	var pendingErr error // a rejected one
	w, err := config.Watch[C](ctx, func(next C, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case srv == nil && err != nil:
			pendingErr = err
		case srv == nil:
			pending, pendingErr = &next, nil
		case err != nil:
			srv.Logger().Error("configuration change rejected", "error", err)
		default:
			_ = srv.Reload(next.ServiceConfig()) // logs and counts its own outcome
		}
	}, config.WithDir(*dir), config.WithFlags(fs), config.WithEnvPrefix(EnvPrefix(name)))
	if err != nil {
		return err
	}
	defer w.Close()
	built, err := build(ctx, w.Current())
	if err != nil {
		return err
	}
	if built == nil {
		return errors.New("service: the build function returned no server and no error")
	}
	// Reload needs the built chain; a server that cannot build it fails in
	// Serve, which releases what it holds.
	if err := built.Check(); err != nil {
		return built.Serve(ctx)
	}
	mu.Lock()
	srv = built
	if pending != nil {
		_ = srv.Reload((*pending).ServiceConfig())
	}
	if pendingErr != nil {
		srv.Logger().Error("configuration change rejected", "error", pendingErr)
	}
	mu.Unlock()
	return srv.Serve(ctx)
}

// usageError is a command line that Run's flags refuse; the flag package
// has already printed it with the usage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main is Run for a service's func main, with os.Args: on an error it
// prints "name: error" to standard error and exits 1, so that an
// orchestrator records a failed start or an unclean stop; on a command
// line its flags refuse, which Run has printed with the usage, it exits 2.
//
//	func main() {
//		service.Main("captures", captures.NewServer, service.WithConfigDir("examples/captures/config"))
//	}
func Main[C Configuration](name string, build Builder[C], opts ...RunOption) {
	err := Run(context.Background(), name, os.Args[1:], build, opts...)
	if errors.As(err, new(usageError)) {
		os.Exit(2) // as the flag package does; the error is printed
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// EnvPrefix is the prefix of the environment variables that Run reads as
// keys for a service named name: name upper-cased, with every character
// other than a letter or digit turned into '_' ("order-api" gives
// ORDER_API, read as ORDER_API_SERVICE__LISTEN_ADDR).
func EnvPrefix(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, name)
}
