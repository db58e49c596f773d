// Package exampletest tests the example services' commands: it points
// their environment configurations (staging, production) at the services
// on this machine, through environment variables, so that tests start each
// service on each environment's real configuration with local
// infrastructure.
package exampletest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loamhq/loam/examples/internal/pgdb"
	"github.com/loamhq/loam/internal/testenv"
	"github.com/loamhq/loam/service"
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

// ServesEachEnvironment runs the command of the service named name, with
// build and its configuration directory ("config", as the command's test
// sees it), on each environment in turn, on free loopback ports, and
// checks that it serves and stops cleanly: development on nothing but the
// process, staging and production on the local services (LocalInfra) in
// place of theirs. database sets the service's own database keys to the
// schema and URL LocalInfra returns.
func ServesEachEnvironment[C service.Configuration](t *testing.T, name string, build service.Builder[C], database func(t *testing.T, schema, url string)) {
	for _, env := range []string{"development", "staging", "production"} {
		t.Run(env, func(t *testing.T) {
			if env != "development" {
				schema, url := LocalInfra(t, service.EnvPrefix(name))
				database(t, schema, url)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			args := []string{"--env=" + env, "--service.listen_addr=127.0.0.1:0", "--service.admin_addr=127.0.0.1:0"}
			if err := service.Run(ctx, name, args, build); err != nil {
				t.Errorf("Run(%s) = %v, want a clean stop", env, err)
			}
		})
	}
}

// RejectsATypo runs the command of the service named name on a
// configuration with a misspelt key, and checks that it refuses to start,
// naming the key and the file and line.
func RejectsATypo[C service.Configuration](t *testing.T, name string, build service.Builder[C]) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("service:\n  name: "+name+"\n  listen_adr: 127.0.0.1:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := service.Run(t.Context(), name, []string{"--config", dir}, build)
	if err == nil || !strings.Contains(err.Error(), "service.listen_adr") || !strings.Contains(err.Error(), "base.yaml:3") {
		t.Errorf("Run(typo in config) = %v, want an error naming service.listen_adr and base.yaml:3", err)
	}
}
