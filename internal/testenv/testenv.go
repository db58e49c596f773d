// Package testenv connects integration tests to the backing services that
// Loam runs against: PostgreSQL, Redis, RabbitMQ and NATS with JetStream.
//
// Each helper takes the service's address from an environment variable, or
// a loopback default, and checks that the service answers. When it does not,
// the test is skipped with a message that names the service, the address,
// the error and the command that starts it, so `go test ./...` passes on a
// laptop with nothing running. With LOAM_REQUIRE_SERVICES=1 (set by CI) the
// same message fails the test instead: a missing service is never a silent
// skip there.
//
// Clients returned are closed by t.Cleanup.
package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/rueidis"
)

// RequireEnv is the environment variable that, set to 1, turns a missing
// service into a test failure.
const RequireEnv = "LOAM_REQUIRE_SERVICES"

// dialTimeout bounds every reachability check and client connection.
const dialTimeout = 3 * time.Second

// Service is a backing service that integration tests talk to.
type Service struct {
	// Name is what messages call the service.
	Name string
	// EnvVar holds the service's address or URL when set.
	EnvVar string
	// Default is the address or URL used when EnvVar is empty.
	Default string
	// Start is the command that starts the service on a Loam build machine.
	Start string
}

// The services of a Loam build machine, on loopback.
var (
	Postgres = Service{
		Name:    "PostgreSQL",
		EnvVar:  "LOAM_POSTGRES_URL",
		Default: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		Start:   "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
	}
	Redis = Service{
		Name:    "Redis",
		EnvVar:  "LOAM_REDIS_ADDR",
		Default: "127.0.0.1:6379",
		Start:   `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`,
	}
	RabbitMQ = Service{
		Name:    "RabbitMQ",
		EnvVar:  "LOAM_RABBITMQ_URL",
		Default: "amqp://guest:guest@127.0.0.1:5672/",
		Start:   "rabbitmq-server -detached",
	}
	NATS = Service{
		Name:    "NATS",
		EnvVar:  "LOAM_NATS_URL",
		Default: "nats://127.0.0.1:4222",
		Start:   "nats-server -a 127.0.0.1 -p 4222 -js",
	}
)

// Required reports whether LOAM_REQUIRE_SERVICES=1 is set.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// URL returns the service's address or URL after checking that something
// accepts TCP connections there. When nothing does, it skips t, or fails it
// under LOAM_REQUIRE_SERVICES=1.
func (s Service) URL(t testing.TB) string {
	t.Helper()
	raw := s.address()
	hostPort, err := hostPort(raw)
	if err != nil {
		t.Fatalf("testenv: %s=%q is not a valid address for %s: %v", s.EnvVar, raw, s.Name, err)
	}
	conn, err := net.DialTimeout("tcp", hostPort, dialTimeout)
	if err != nil {
		s.unavailable(t, err)
	}
	conn.Close()
	return raw
}

func (s Service) address() string {
	if v := os.Getenv(s.EnvVar); v != "" {
		return v
	}
	return s.Default
}

// unavailable skips or fails t, saying which service, where, why, and how to
// start it.
func (s Service) unavailable(t testing.TB, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s is not available at %s: %v\n\tstart it with: %s\n\tor point %s at a running one",
		s.Name, redact(s.address()), err, s.Start, s.EnvVar)
	if Required() {
		t.Fatalf("%s\n\t%s=1 requires every service", msg, RequireEnv)
	}
	t.Skipf("%s\n\tskipped; %s=1 makes this a failure", msg, RequireEnv)
}

// PostgresPool returns a connection pool to the PostgreSQL database, after a
// successful ping.
func PostgresPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	raw := Postgres.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, raw)
	if err != nil {
		t.Fatalf("testenv: %s=%q: %v", Postgres.EnvVar, redact(raw), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		Postgres.unavailable(t, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// PostgresSchema creates a schema of t's own, named prefix and random
// letters, which t.Cleanup drops with everything in it, and returns its
// name and a connection URL whose sessions find it first on their
// search_path: unqualified tables that code under test creates land there.
func PostgresSchema(t testing.TB, prefix string) (schema, connURL string) {
	t.Helper()
	pool := PostgresPool(t)
	schema = prefix + "_" + strings.ToLower(rand.Text()[:10])
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testenv: creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("testenv: dropping schema %s: %v", schema, err)
		}
	})
	raw := Postgres.URL(t)
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return schema, raw + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return schema, u.String()
}

// RedisClient returns a Redis client, after a successful PING.
func RedisClient(t testing.TB) rueidis.Client {
	t.Helper()
	addr := Redis.URL(t)
	opt := rueidis.ClientOption{InitAddress: []string{addr}, Dialer: net.Dialer{Timeout: dialTimeout}, DisableCache: true}
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = rueidis.ParseURL(addr); err != nil {
			t.Fatalf("testenv: %s=%q: %v", Redis.EnvVar, redact(addr), err)
		}
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		Redis.unavailable(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if err := client.Do(ctx, client.B().Ping().Build()).Error(); err != nil {
		client.Close()
		Redis.unavailable(t, err)
	}
	t.Cleanup(client.Close)
	return client
}

// RabbitMQConn returns an AMQP 0-9-1 connection to RabbitMQ.
func RabbitMQConn(t testing.TB) *amqp.Connection {
	t.Helper()
	raw := RabbitMQ.URL(t)
	conn, err := amqp.DialConfig(raw, amqp.Config{Dial: amqp.DefaultDial(dialTimeout)})
	if err != nil {
		RabbitMQ.unavailable(t, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// NATSConn returns a connection to NATS, after a round trip to the server.
func NATSConn(t testing.TB) *nats.Conn {
	t.Helper()
	raw := NATS.URL(t)
	nc, err := nats.Connect(raw, nats.Timeout(dialTimeout), nats.Name("loam-test"))
	if err != nil {
		NATS.unavailable(t, err)
	}
	if err := nc.FlushTimeout(dialTimeout); err != nil {
		nc.Close()
		NATS.unavailable(t, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// hostPort extracts host:port from a URL or returns a bare host:port.
func hostPort(raw string) (string, error) {
	if !strings.Contains(raw, "://") {
		if _, _, err := net.SplitHostPort(raw); err != nil {
			return "", err
		}
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return "", fmt.Errorf("no port in %q", redact(raw))
	}
	return u.Host, nil
}

// redact hides the password of a URL, so messages never print credentials.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
