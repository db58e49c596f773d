package main

import (
	"testing"

	"github.com/loamhq/loam/examples/internal/captures"
	"github.com/loamhq/loam/examples/internal/exampletest"
)

// TestRunServesEachEnvironment starts the command on each environment's
// configuration: staging and production on the local PostgreSQL, NATS and
// Redis in place of theirs.
func TestRunServesEachEnvironment(t *testing.T) {
	exampletest.ServesEachEnvironment(t, "captures", captures.NewServer, func(t *testing.T, schema, url string) {
		t.Setenv("CAPTURES_EVENTS__OUTBOX__URL", url)
		t.Setenv("CAPTURES_EVENTS__OUTBOX__PASSWORD", "")
		t.Setenv("CAPTURES_EVENTS__OUTBOX__SCHEMA", schema)
	})
}

func TestRunRejectsBadConfig(t *testing.T) {
	exampletest.RejectsATypo(t, "captures", captures.NewServer)
}
