// Package exampletest points an example service's environment
// configurations (staging, production) at the services on this machine,
// through environment variables, so that tests start the service on each
// environment's real configuration with local infrastructure.
package exampletest

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loamhq/loam/examples/internal/pgdb"
	"github.com/loamhq/loam/internal/testenv"
)

// LocalInfra sets, for the rest of t, the environment variables with
// prefix (such as "CAPTURES") that replace the collector, NATS, Redis and
// their secrets of a staging or production configuration with the local
// services, and turn off the drain delay that waits for a load balancer.
// It returns a schema of t's own in the local PostgreSQL and its URL, for
// the service's database keys. A local service that is down skips t, or
// fails it under LOAM_REQUIRE_SERVICES=1.
func LocalInfra(t *testing.T, prefix string) (schema, dbURL string) {
	t.Helper()
	set := func(key, value string) { t.Setenv(prefix+"_"+key, value) }
	set("SERVICE__DRAIN_DELAY", "0s")
	for _, signal := range []string{"TRACES", "METRICS"} {
		set("TELEMETRY__"+signal+"__EXPORTER", "none")
		set("TELEMETRY__"+signal+"__ENDPOINT", "")
	}
	set("EVENTS__NATS__URL", testenv.NATS.URL(t))
	set("EVENTS__NATS__CREDENTIALS_FILE", "")
	set("CACHE__REDIS__ADDRESSES", testenv.Redis.HostPort(t))
	set("CACHE__REDIS__PASSWORD", "")
	set("CACHE__REDIS__TLS", "false")
	return testenv.PostgresSchema(t, "loam_"+strings.ToLower(prefix))
}

// PostgresPool returns a pool on a schema of t's own in the local
// PostgreSQL, opened as the services open theirs and closed when t ends,
// with the schema's name and a URL whose sessions find it first.
func PostgresPool(t *testing.T, name string) (_ *pgxpool.Pool, schema, url string) {
	t.Helper()
	schema, url = testenv.PostgresSchema(t, "loam_"+name)
	pool, err := pgdb.Open(t.Context(), "test", pgdb.Config{URL: url}, name+"-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, schema, url
}
