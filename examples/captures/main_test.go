package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/examples/internal/captures"
	"github.com/loamhq/loam/examples/internal/exampletest"
	"github.com/loamhq/loam/service"
)

// TestRunServesEachEnvironment starts the service on each environment's
// configuration, on free loopback ports, and stops it: development on
// nothing but the process, staging and production on the local
// PostgreSQL, NATS and Redis in place of theirs.
func TestRunServesEachEnvironment(t *testing.T) {
	for _, env := range []string{"development", "staging", "production"} {
		t.Run(env, func(t *testing.T) {
			if env != "development" {
				schema, db := exampletest.LocalInfra(t, "CAPTURES")
				t.Setenv("CAPTURES_EVENTS__OUTBOX__URL", db)
				t.Setenv("CAPTURES_EVENTS__OUTBOX__PASSWORD", "")
				t.Setenv("CAPTURES_EVENTS__OUTBOX__SCHEMA", schema)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			args := []string{"--env=" + env, "--service.listen_addr=127.0.0.1:0", "--service.admin_addr=127.0.0.1:0"}
			if err := service.Run(ctx, "captures", args, captures.NewServer); err != nil {
				t.Errorf("Run(%s) = %v, want a clean stop", env, err)
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("service:\n  name: captures\n  listen_adr: 127.0.0.1:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := service.Run(t.Context(), "captures", []string{"--config", dir}, captures.NewServer)
	if err == nil || !strings.Contains(err.Error(), "service.listen_adr") || !strings.Contains(err.Error(), "base.yaml:3") {
		t.Errorf("Run(typo in config) = %v, want an error naming service.listen_adr and base.yaml:3", err)
	}
}
