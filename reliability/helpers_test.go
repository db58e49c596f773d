//go:build fault

package reliability_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

// OutEnv names a file to which every test appends its rows, as the
// Markdown rows of RELIABILITY.md's tables.
const OutEnv = "LOAM_RELIABILITY_OUT"

// wait bounds every wait of the suite: a fault that makes something hang
// fails the test within it instead of hanging the run.
const wait = 60 * time.Second

// row is one line of a scenario's table.
type row struct {
	scenario string // the table it belongs to
	fault    string // what was done
	load     string // what ran meanwhile
	requests int64  // requests or events attempted
	errors   int64  // failures callers saw
	lost     int64  // events committed or published and never handled; -1: not applicable
	dups     int64  // events a handler took effect for more than once; -1: not applicable
	recovery time.Duration
	// recoveryNote replaces the recovery time when set (such as "no outage").
	recoveryNote string
}

var outMu sync.Mutex

// report logs r in the suite's fixed format and, with LOAM_RELIABILITY_OUT
// set, appends it to that file.
func report(t *testing.T, r row) {
	t.Helper()
	na := func(n int64) string {
		if n < 0 {
			return "n/a"
		}
		return fmt.Sprint(n)
	}
	rec := r.recoveryNote
	if rec == "" {
		rec = r.recovery.Round(time.Millisecond).String()
	}
	line := fmt.Sprintf("| %s | %s | %s | %d | %d | %s | %s | %s |", r.scenario, r.fault, r.load, r.requests, r.errors, na(r.lost), na(r.dups), rec)
	t.Log("reliability: " + line)
	path := os.Getenv(OutEnv)
	if path == "" {
		return
	}
	outMu.Lock()
	defer outMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("%s=%s: %v", OutEnv, path, err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Errorf("%s=%s: %v", OutEnv, path, err)
	}
}

// ctxT returns a context that ends after the suite's wait, or with the test.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 2ms until it holds or d passes, and reports
// whether it held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cond()
}

// stubConfig is a valid service configuration on loopback whose stub
// service is public.
func stubConfig() service.Config {
	return service.Config{
		Authz: authz.Config{Rules: map[string]authz.Rule{"/" + stubserver.Service + "/*": {Public: true}}},
		Service: service.Settings{
			Name:            "reliability",
			Environment:     "test",
			ListenAddr:      "127.0.0.1:0",
			AdminAddr:       "127.0.0.1:0",
			ShutdownTimeout: 5 * time.Second,
			Client: service.ClientSettings{Timeout: 5 * time.Second, RetryMaxAttempts: 3,
				RetryInitialBackoff: 10 * time.Millisecond, RetryMaxBackoff: 50 * time.Millisecond},
		},
	}
}

// serving reports whether the server behind conn answers its health check
// with SERVING.
func serving(ctx context.Context, conn grpc.ClientConnInterface) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// firstErr keeps the first error of many goroutines, for the message of a
// failed assertion.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// testWriter logs to t until the test ends, and drops later writes.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
