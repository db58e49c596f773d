package testenv

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestPostgresPing(t *testing.T) {
	pool := PostgresPool(t)
	var one int
	if err := pool.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v; want 1, nil", one, err)
	}
}

func TestRedisPing(t *testing.T) {
	client := RedisClient(t)
	got, err := client.Do(t.Context(), client.B().Ping().Build()).ToString()
	if err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v; want PONG, nil", got, err)
	}
}

func TestRabbitMQPing(t *testing.T) {
	conn := RabbitMQConn(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("Channel() = %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatalf("QueueDeclare(exclusive, auto-delete) = %v", err)
	}
	if q.Name == "" {
		t.Fatal("QueueDeclare() returned a queue with no name")
	}
}

func TestNATSPing(t *testing.T) {
	nc := NATSConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("JetStream AccountInfo() = %v; is the server running with -js?", err)
	}
}

// recorder is a testing.TB that records Skipf and Fatalf instead of ending
// the real test.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	failed  string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls f with a recorder on its own goroutine, as the testing package
// runs a test, and returns what was recorded.
func run(t *testing.T, f func(testing.TB)) (skipped, failed string) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.skipped, r.failed
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUnavailable(t *testing.T) {
	addr := closedAddr(t)
	tests := []struct {
		name     string
		svc      Service
		value    string
		require  string
		wantSkip bool
		want     []string
	}{
		{
			name: "skip when not required", svc: Redis, value: addr, require: "", wantSkip: true,
			want: []string{"Redis is not available at " + addr, "start it with: redis-server", "LOAM_REDIS_ADDR", "LOAM_REQUIRE_SERVICES=1 makes this a failure"},
		},
		{
			name: "fail when required", svc: Postgres, value: "postgres://u:hunter2@" + addr + "/test", require: "1",
			want: []string{"PostgreSQL is not available at postgres://u:xxxxx@" + addr + "/test", "pg_ctlcluster", "LOAM_POSTGRES_URL", "LOAM_REQUIRE_SERVICES=1 requires every service"},
		},
		{
			name: "other values of the switch do not require", svc: NATS, value: "nats://" + addr, require: "true", wantSkip: true,
			want: []string{"NATS is not available", "nats-server"},
		},
		{
			name: "bad address fails whatever the switch", svc: RabbitMQ, value: "not-an-address", require: "",
			want: []string{`LOAM_RABBITMQ_URL="not-an-address" is not a valid address for RabbitMQ`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.svc.EnvVar, tt.value)
			t.Setenv(RequireEnv, tt.require)
			skipped, failed := run(t, func(tb testing.TB) { tt.svc.URL(tb) })
			got := failed
			if tt.wantSkip {
				got = skipped
				if failed != "" {
					t.Fatalf("%s.URL() failed with %q, want a skip", tt.svc.Name, failed)
				}
			} else if skipped != "" {
				t.Fatalf("%s.URL() skipped with %q, want a failure", tt.svc.Name, skipped)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s.URL() message = %q, want it to contain %q", tt.svc.Name, got, w)
				}
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("%s.URL() message = %q, leaks the password", tt.svc.Name, got)
			}
		})
	}
}

// hangUpAddr returns a loopback address that accepts connections and closes
// them at once, like a service that is restarting or a proxy that lost its
// upstream.
func hangUpAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

// TestClientHelpersReportUnavailable checks that each client helper goes
// through the same skip-or-fail path when the port answers but the service
// hangs up before its protocol handshake.
func TestClientHelpersReportUnavailable(t *testing.T) {
	addr := hangUpAddr(t)
	helpers := []struct {
		svc   Service
		value string
		call  func(testing.TB)
	}{
		{Postgres, "postgres://postgres@" + addr + "/test", func(tb testing.TB) { PostgresPool(tb) }},
		{Redis, addr, func(tb testing.TB) { RedisClient(tb) }},
		{RabbitMQ, "amqp://guest:guest@" + addr + "/", func(tb testing.TB) { RabbitMQConn(tb) }},
		{NATS, "nats://" + addr, func(tb testing.TB) { NATSConn(tb) }},
	}
	for _, h := range helpers {
		t.Run(h.svc.Name, func(t *testing.T) {
			t.Setenv(h.svc.EnvVar, h.value)
			t.Setenv(RequireEnv, "1")
			_, failed := run(t, h.call)
			if !strings.Contains(failed, h.svc.Name+" is not available") {
				t.Errorf("%s helper with the service down: failure = %q, want it to name the service", h.svc.Name, failed)
			}
		})
	}
}
