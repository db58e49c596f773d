package main

import (
	"testing"

	"github.com/loamhq/loam/examples/internal/exampletest"
	"github.com/loamhq/loam/examples/internal/impact"
)

// TestRunServesEachEnvironment starts the command on each environment's
// configuration: staging and production on the local PostgreSQL, NATS and
// Redis in place of theirs.
func TestRunServesEachEnvironment(t *testing.T) {
	exampletest.ServesEachEnvironment(t, "impact", impact.NewServer, func(t *testing.T, schema, url string) {
		// The URL puts the schema first on the search_path.
		t.Setenv("IMPACT_IMPACT__DATABASE__URL", url)
		t.Setenv("IMPACT_IMPACT__DATABASE__PASSWORD", "")
	})
}

func TestRunRejectsBadConfig(t *testing.T) {
	exampletest.RejectsATypo(t, "impact", impact.NewServer)
}
