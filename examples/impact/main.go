// Command impact runs the impact example service standalone, against
// the OIDC issuer its configuration names, with health and, outside
// production, reflection for grpcurl.
//
//	go run ./examples/impact --env staging
//	go run ./examples/impact --config examples/impact/config --service.listen_addr=127.0.0.1:7001
//
// Flags named after configuration keys override them; so do environment
// variables such as IMPACT_SERVICE__LISTEN_ADDR. SIGTERM or Ctrl-C drains
// and stops it. The role policy reloads when the files change.
//
// The service counts the CaptureCreated events of its own events bus; the
// configurations here keep the default in-memory bus, so a standalone
// impact sees the captures service's events only when both name the same
// broker in their `events` section (events.driver: nats).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/examples/internal/impact"
)

func main() {
	fs := flag.NewFlagSet("impact", flag.ExitOnError)
	fs.String("env", "", "environment: development, staging or production (default $LOAM_ENV, else development)")
	dir := fs.String("config", "examples/impact/config", "directory of the configuration files")
	fs.String("service.listen_addr", "", "gRPC address, overriding the configuration")
	fs.String("service.admin_addr", "", "admin HTTP address, overriding the configuration")
	fs.Parse(os.Args[1:])
	if err := run(context.Background(), fs, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "impact:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, fs *flag.FlagSet, dir string) error {
	opts := []config.Option{config.WithDir(dir), config.WithFlags(fs), config.WithEnvPrefix("IMPACT")}
	cfg, err := config.Load[impact.Config](ctx, opts...)
	if err != nil {
		return err
	}
	srv, err := impact.NewServer(ctx, cfg)
	if err != nil {
		return err
	}
	// Roles, rules, the log level, fault injection and Loam's own limits
	// change without a restart; Reload logs what it applied and names what
	// needs a restart. An invalid change is reported and the last good
	// configuration stays.
	w, err := config.Watch[impact.Config](ctx, func(next impact.Config, err error) {
		if err != nil {
			srv.Logger().Error("configuration change rejected", "error", err)
			return
		}
		_ = srv.Reload(next.Config) // logs and counts its own outcome
	}, opts...)
	if err != nil {
		return err
	}
	defer w.Close()
	return srv.Serve(ctx)
}
