package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func flags(t *testing.T, args ...string) *flag.FlagSet {
	t.Helper()
	fs := flag.NewFlagSet("impact", flag.ContinueOnError)
	fs.String("env", "", "")
	fs.String("service.listen_addr", "", "")
	fs.String("service.admin_addr", "", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestRunServesEachEnvironment starts the service with each environment's
// configuration, on free loopback ports, and stops it.
func TestRunServesEachEnvironment(t *testing.T) {
	for _, env := range []string{"development", "staging", "production"} {
		t.Run(env, func(t *testing.T) {
			// The collector of staging and production is not here, and no
			// load balancer needs a drain delay.
			t.Setenv("IMPACT_SERVICE__DRAIN_DELAY", "0s")
			for _, signal := range []string{"TRACES", "METRICS"} {
				t.Setenv("IMPACT_TELEMETRY__"+signal+"__EXPORTER", "none")
				t.Setenv("IMPACT_TELEMETRY__"+signal+"__ENDPOINT", "")
			}
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			fs := flags(t, "--env="+env, "--service.listen_addr=127.0.0.1:0", "--service.admin_addr=127.0.0.1:0")
			if err := run(ctx, fs, "config"); err != nil {
				t.Errorf("run(%s) = %v, want a clean stop", env, err)
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("service:\n  name: impact\n  listen_adr: 127.0.0.1:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), flags(t), dir)
	if err == nil || !strings.Contains(err.Error(), "service.listen_adr") || !strings.Contains(err.Error(), "base.yaml:3") {
		t.Errorf("run(typo in config) = %v, want an error naming service.listen_adr and base.yaml:3", err)
	}
}
