package pgoutbox_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/internal/testenv"
)

// db is one test's schema on the machine's PostgreSQL, dropped when the
// test ends, with an admin pool that connects directly.
type db struct {
	admin  *pgxpool.Pool
	url    string // direct
	schema string
}

func newDB(t testing.TB) *db {
	t.Helper()
	admin := testenv.PostgresPool(t)
	d := &db{admin: admin, url: testenv.Postgres.URL(t), schema: "loam_test_" + strings.ToLower(rand.Text()[:12])}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{d.schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("cleanup: dropping schema %s: %v", d.schema, err)
		}
	})
	return d
}

// table is the qualified name of the outbox table in d.
func (d *db) table() string { return pgx.Identifier{d.schema, pgoutbox.DefaultTable}.Sanitize() }

// via returns d's URL with the host replaced by addr, such as a proxy's.
func (d *db) via(t testing.TB, addr string) string {
	t.Helper()
	u, err := url.Parse(d.url)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// config is a Config on d for tests: fast polling, failover, backoff and
// stop.
func (d *db) config(url string) pgoutbox.Config {
	return pgoutbox.Config{
		URL:      url,
		Schema:   d.schema,
		MaxConns: 3,
		Relay: pgoutbox.RelayConfig{
			PollInterval:   200 * time.Millisecond,
			LockInterval:   200 * time.Millisecond,
			Timeout:        5 * time.Second,
			InitialBackoff: 20 * time.Millisecond,
			MaxBackoff:     300 * time.Millisecond,
			StopTimeout:    3 * time.Second,
		},
	}
}

// pool returns a pool to url, closed when the test ends: the application's.
func pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// count returns what a query of one integer returns.
func (d *db) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := d.admin.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter logs to t until the test ends, and drops later writes.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// errDown is what a broker that is down returns.
var errDown = errors.New("test broker: down")

// flaky wraps a memory broker, shared between the Brokers of a test: while
// down it fails every Send with a retryable error, while stalled it blocks
// every Send until its context ends, and Close leaves the memory broker
// open for the others.
type flaky struct {
	*memory.Broker
	mu    sync.Mutex
	state string // "", "down" or "stalled"
}

func newFlaky() *flaky { return &flaky{Broker: memory.New()} }

func (f *flaky) setDown(down bool) {
	if down {
		f.set("down")
	} else {
		f.set("")
	}
}

func (f *flaky) set(state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = state
}

func (f *flaky) Close() error { return nil }

func (f *flaky) OpenTopic(ctx context.Context, name string) (driver.Topic, error) {
	t, err := f.Broker.OpenTopic(ctx, name)
	if err != nil {
		return nil, err
	}
	return &flakyTopic{Topic: t, f: f}, nil
}

type flakyTopic struct {
	driver.Topic
	f *flaky
}

func (t *flakyTopic) Send(ctx context.Context, ms []*driver.Message) error {
	t.f.mu.Lock()
	state := t.f.state
	t.f.mu.Unlock()
	switch state {
	case "down":
		return errDown
	case "stalled":
		<-ctx.Done()
		return ctx.Err()
	}
	return t.Topic.Send(ctx, ms)
}

func (t *flakyTopic) IsRetryable(err error) bool {
	return errors.Is(err, errDown) || t.Topic.IsRetryable(err)
}

// ctxT returns a context that ends after the tests' wait, or with the test.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// rawSub opens a driver subscription on b's topic, next to what the test
// does, closed when the test ends.
func rawSub(t testing.TB, b driver.Broker, topic string) driver.Subscription {
	t.Helper()
	ds, err := b.OpenSubscription(ctxT(t), topic, driver.SubscriptionConfig{Name: "raw", MaxAttempts: 5, MaxInFlight: 100})
	if err != nil {
		t.Fatalf("OpenSubscription(%q): %v", topic, err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds
}

// deleteStreams deletes the JetStream streams that store subjects
// matching filters, on the machine's NATS server.
func deleteStreams(t testing.TB, filters ...string) {
	nc, err := nats.Connect(testenv.NATS.URL(t))
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, f := range filters {
		for name := range js.StreamNames(ctx, jetstream.WithStreamListSubject(f)).Name() {
			if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("cleanup: deleting stream %s: %v", name, err)
			}
		}
	}
}

// waitUntil polls cond every 20ms, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
