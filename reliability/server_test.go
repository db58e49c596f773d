//go:build fault

package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/loamtest"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// TestPanickingHandler: a handler that panics on every tenth call, under
// 8 concurrent callers. Each panic is that call's INTERNAL and nothing
// else's: the server stays up and every other call succeeds.
func TestPanickingHandler(t *testing.T) {
	const calls, workers = 2000, 8
	var n atomic.Int64
	srv := loamtest.StartServer(t, stubConfig(), (&stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if n.Add(1)%10 == 0 {
			panic("reliability: the tenth call panics")
		}
		return in, nil
	}}).Register)
	conn := srv.Client(t, "")
	ctx := ctxT(t)
	var ok, internal, other atomic.Int64
	var first firstErr
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < calls; i += workers {
				_, err := stubserver.Unary(ctx, conn, fmt.Sprint(i))
				switch status.Code(err) {
				case codes.OK:
					ok.Add(1)
				case codes.Internal:
					internal.Add(1)
				default:
					other.Add(1)
					first.set(err)
				}
			}
		})
	}
	wg.Wait()
	up := serving(ctx, conn)
	_, after := stubserver.Unary(ctx, conn, "after")
	report(t, row{scenario: "panic", fault: "handler panics on every 10th call", load: "8 callers, bounded loop",
		requests: calls, errors: internal.Load() + other.Load(), lost: -1, dups: -1, recoveryNote: "no outage"})
	if other.Load() != 0 {
		t.Errorf("%d calls failed with something other than INTERNAL; first: %v", other.Load(), first.get())
	}
	if got, want := internal.Load(), int64(calls/10); got != want {
		t.Errorf("%d calls were INTERNAL, want %d (every tenth)", got, want)
	}
	if got, want := ok.Load(), int64(calls-calls/10); got != want {
		t.Errorf("%d calls succeeded, want %d", got, want)
	}
	if !up {
		t.Error("the server's health is not SERVING after the panics")
	}
	if after != nil && status.Code(after) != codes.Internal {
		t.Errorf("a call after the panics = %v, want it served", after)
	}
}

// attempts counts, per request value, the attempts that reached the
// server, in the application's slot of the chain, which runs before fault
// injection.
type attempts struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *attempts) interceptor() service.Interceptor {
	a.n = map[string]int{}
	return service.InterceptorFuncs(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if v, ok := req.(*wrapperspb.StringValue); ok {
			a.mu.Lock()
			a.n[v.GetValue()]++
			a.mu.Unlock()
		}
		return handler(ctx, req)
	}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, ss)
	})
}

func (a *attempts) of(v string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[v]
}

// TestFaultInjection drives calls through the fault injection interceptor's
// rules and request headers, and checks what clients see: deadlines end
// delayed calls on time, and the retry policy of the service config
// retries UNAVAILABLE exactly as configured and nothing else.
func TestFaultInjection(t *testing.T) {
	const calls = 200
	percent := func(p float64) *float64 { return &p }
	tests := []struct {
		name     string
		want     string            // what callers should see, for the report
		rule     service.FaultRule // Method is filled in
		header   metadata.MD       // sent with every call
		deadline time.Duration
		retry    bool // the client retries the method
		// check judges a call: its error, its latency and the attempts
		// the server saw.
		check func(err error, took time.Duration, attempts int) error
		// minOK is the least share of calls that must succeed.
		minOK float64
	}{{
		name:     "delay 300ms past a 100ms deadline",
		want:     "every call DEADLINE_EXCEEDED by its deadline, none retried",
		rule:     service.FaultRule{Delay: 300 * time.Millisecond},
		deadline: 100 * time.Millisecond,
		check: func(err error, took time.Duration, n int) error {
			if status.Code(err) != codes.DeadlineExceeded {
				return fmt.Errorf("error %v, want DeadlineExceeded", err)
			}
			if took > time.Second {
				return fmt.Errorf("returned after %v with a 100ms deadline", took)
			}
			return nil
		},
	}, {
		name:     "delay 50ms within a 1s deadline",
		want:     "every call OK after 50ms or more",
		rule:     service.FaultRule{Delay: 50 * time.Millisecond},
		deadline: time.Second,
		check: func(err error, took time.Duration, n int) error {
			if err != nil || took < 50*time.Millisecond || n != 1 {
				return fmt.Errorf("error %v after %v in %d attempts; want success after 50ms in one", err, took, n)
			}
			return nil
		},
		minOK: 1,
	}, {
		name:     "abort UNAVAILABLE always, retried",
		want:     "every call UNAVAILABLE after 3 attempts",
		rule:     service.FaultRule{Abort: "UNAVAILABLE"},
		deadline: 5 * time.Second,
		retry:    true,
		check: func(err error, took time.Duration, n int) error {
			if status.Code(err) != codes.Unavailable || n != 3 {
				return fmt.Errorf("error %v in %d attempts; want UNAVAILABLE after 3 (retry_max_attempts)", err, n)
			}
			return nil
		},
	}, {
		name:     "abort UNAVAILABLE 30%, retried",
		want:     "OK within 3 attempts, or UNAVAILABLE after 3 (0.3³ ≈ 2.7%)",
		rule:     service.FaultRule{Abort: "UNAVAILABLE", Percent: percent(30)},
		deadline: 5 * time.Second,
		retry:    true,
		check: func(err error, took time.Duration, n int) error {
			switch {
			case err == nil && n >= 1 && n <= 3:
			case status.Code(err) == codes.Unavailable && n == 3:
			default:
				return fmt.Errorf("error %v in %d attempts; want success within 3 attempts, or UNAVAILABLE after 3", err, n)
			}
			return nil
		},
		minOK: 0.9, // 0.3³ = 2.7% expected to fail
	}, {
		name:     "abort UNAVAILABLE 30%, method not retried",
		want:     "one attempt each, about 30% UNAVAILABLE",
		rule:     service.FaultRule{Abort: "UNAVAILABLE", Percent: percent(30)},
		deadline: 5 * time.Second,
		check: func(err error, took time.Duration, n int) error {
			if n != 1 || (err != nil && status.Code(err) != codes.Unavailable) {
				return fmt.Errorf("error %v in %d attempts; want one attempt, OK or UNAVAILABLE", err, n)
			}
			return nil
		},
		minOK: 0.5,
	}, {
		name:     "abort INTERNAL, not retryable",
		want:     "every call INTERNAL after one attempt",
		rule:     service.FaultRule{Abort: "INTERNAL"},
		deadline: 5 * time.Second,
		retry:    true,
		check: func(err error, took time.Duration, n int) error {
			if status.Code(err) != codes.Internal || n != 1 {
				return fmt.Errorf("error %v in %d attempts; want INTERNAL after one", err, n)
			}
			return nil
		},
	}, {
		name:     "header asks for a 2s delay past a 100ms deadline",
		want:     "every call DEADLINE_EXCEEDED by its deadline",
		header:   metadata.Pairs(service.FaultDelayHeader, "2s"),
		deadline: 100 * time.Millisecond,
		check: func(err error, took time.Duration, n int) error {
			if status.Code(err) != codes.DeadlineExceeded || took > time.Second {
				return fmt.Errorf("error %v after %v; want DeadlineExceeded within the deadline", err, took)
			}
			return nil
		},
	}, {
		name:     "header asks for UNAVAILABLE, retried",
		want:     "every call UNAVAILABLE after 3 attempts",
		header:   metadata.Pairs(service.FaultAbortHeader, "UNAVAILABLE"),
		deadline: 5 * time.Second,
		retry:    true,
		check: func(err error, took time.Duration, n int) error {
			if status.Code(err) != codes.Unavailable || n != 3 {
				return fmt.Errorf("error %v in %d attempts; want UNAVAILABLE after 3", err, n)
			}
			return nil
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := stubConfig()
			cfg.Service.Faults = service.Faults{Enabled: true, FromHeaders: tt.header != nil}
			if tt.header == nil {
				tt.rule.Method = stubserver.UnaryMethod
				cfg.Service.Faults.Rules = []service.FaultRule{tt.rule}
			}
			var seen attempts
			var handled atomic.Int64
			srv := loamtest.StartServer(t, cfg, (&stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				handled.Add(1)
				return in, nil
			}}).Register, service.WithInterceptors(seen.interceptor()))
			var dopts []service.DialOption
			if tt.retry {
				dopts = append(dopts, service.WithRetryMethods(stubserver.UnaryMethod))
			}
			conn := srv.Client(t, "", dopts...)
			ctx := ctxT(t)
			if tt.header != nil {
				ctx = metadata.NewOutgoingContext(ctx, tt.header)
			}
			var ok, failed, wrong atomic.Int64
			var retries atomic.Int64
			var first firstErr
			var maxTook atomic.Int64
			var wg sync.WaitGroup
			const workers = 8
			for w := range workers {
				wg.Go(func() {
					for i := w; i < calls; i += workers {
						v := fmt.Sprint("call-", i)
						cctx, cancel := context.WithTimeout(ctx, tt.deadline)
						start := time.Now()
						_, err := stubserver.Unary(cctx, conn, v)
						took := time.Since(start)
						cancel()
						if d := int64(took); d > maxTook.Load() {
							maxTook.Store(d) // racy maximum: good enough for a report
						}
						if err == nil {
							ok.Add(1)
						} else {
							failed.Add(1)
						}
						n := seen.of(v)
						retries.Add(int64(max(n-1, 0)))
						if err := tt.check(err, took, n); err != nil {
							wrong.Add(1)
							first.set(fmt.Errorf("%s: %w", v, err))
						}
					}
				})
			}
			wg.Wait()
			report(t, row{scenario: "faults", fault: tt.name, load: fmt.Sprintf("8 callers; want %s; saw %d retries, slowest call %v", tt.want, retries.Load(), time.Duration(maxTook.Load()).Round(time.Millisecond)),
				requests: calls, errors: failed.Load(), lost: -1, dups: -1, recoveryNote: "n/a"})
			if wrong.Load() != 0 {
				t.Errorf("%d of %d calls broke the expectation; first: %v", wrong.Load(), calls, first.get())
			}
			if share := float64(ok.Load()) / calls; share < tt.minOK {
				t.Errorf("%d of %d calls succeeded (%.0f%%), want at least %.0f%%", ok.Load(), calls, 100*share, 100*tt.minOK)
			}
		})
	}
}

// drainServer is a server built with service.New, with a drain delay, whose
// handler sleeps 1-20ms and, for a request "slow", 400ms, so that calls
// are in flight when the drain begins.
type drainServer struct {
	srv     *service.Server
	conn    *grpc.ClientConn
	done    chan error
	mu      sync.Mutex
	started map[string]bool // request values the handler began
	active  atomic.Int64    // handlers running
	slow    atomic.Int64    // slow handlers running
}

func startDrainServer(t *testing.T, drainDelay time.Duration) *drainServer {
	t.Helper()
	cfg := stubConfig()
	cfg.Service.DrainDelay = drainDelay
	cfg.Service.ShutdownTimeout = 5 * time.Second
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := service.New(t.Context(), cfg, service.WithTelemetry(tel), service.WithoutSignals())
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	d := &drainServer{srv: srv, done: make(chan error, 1), started: map[string]bool{}}
	(&stubserver.Stub{Unary: d.handle}).Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-d.done
		tel.Shutdown(context.Background())
	})
	if d.conn, err = service.Dial(t.Context(), srv.Addr().String(), service.WithClientSettings(cfg.Service.Client)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.conn.Close() })
	return d
}

// handle answers after 1-20ms, or after 400ms for a request "slow...".
func (d *drainServer) handle(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	d.mu.Lock()
	d.started[in.GetValue()] = true
	d.mu.Unlock()
	d.active.Add(1)
	defer d.active.Add(-1)
	pause := time.Duration(1+rand.IntN(20)) * time.Millisecond
	if strings.HasPrefix(in.GetValue(), "slow") {
		d.slow.Add(1)
		defer d.slow.Add(-1)
		pause = 400 * time.Millisecond
	}
	select {
	case <-time.After(pause):
		return in, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *drainServer) began(v string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started[v]
}

// TestShutdownUnderLoad drains a server while 16 callers keep it busy,
// with slow calls in flight when the drain begins.
//
// With callers that stop sending once health says NOT_SERVING, as a load
// balancer does during the drain delay, no call fails at all. With callers
// that ignore health and keep sending, calls that arrive after the server
// stopped accepting are refused (UNAVAILABLE, before any handler runs), and
// still no call that a handler began fails.
func TestShutdownUnderLoad(t *testing.T) {
	for _, tt := range []struct {
		name          string
		followsHealth bool
		drainDelay    time.Duration
	}{
		{"callers follow health", true, 300 * time.Millisecond},
		{"callers ignore health", false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := startDrainServer(t, tt.drainDelay)
			ctx := ctxT(t)
			var stop atomic.Bool
			var sent, ok, refused, failedInFlight atomic.Int64
			var first firstErr
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Go(func() {
					for i := 0; i < 5000 && !stop.Load(); i++ {
						v := fmt.Sprintf("call-%d-%d", w, i)
						if i%50 == 25 {
							v = "slow-" + v
						}
						sent.Add(1)
						_, err := stubserver.Unary(ctx, d.conn, v)
						switch {
						case err == nil:
							ok.Add(1)
						case d.began(v):
							failedInFlight.Add(1)
							first.set(fmt.Errorf("%s, begun by the handler: %w", v, err))
						case status.Code(err) == codes.Unavailable:
							refused.Add(1)
							time.Sleep(5 * time.Millisecond) // a caller's backoff
							if tt.followsHealth {
								first.set(fmt.Errorf("%s, refused while callers follow health: %w", v, err))
							}
						default:
							failedInFlight.Add(1)
							first.set(fmt.Errorf("%s: %w", v, err))
						}
					}
				})
			}
			// A second of sustained load, then a moment with a slow call in
			// flight.
			time.Sleep(time.Second)
			if !eventually(wait, func() bool { return d.slow.Load() > 0 }) {
				t.Fatal("no slow call got going")
			}
			inFlight := d.active.Load()
			shutdown := make(chan struct{})
			var drained time.Duration
			go func() {
				defer close(shutdown)
				begin := time.Now()
				if err := d.srv.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown() = %v, want a clean drain", err)
				}
				drained = time.Since(begin)
			}()
			if tt.followsHealth {
				// The balancer: stop sending on NOT_SERVING.
				eventually(wait, func() bool { return !serving(ctx, d.conn) })
				stop.Store(true)
			} else {
				<-shutdown
				stop.Store(true)
			}
			wg.Wait()
			<-shutdown
			errs := failedInFlight.Load()
			if tt.followsHealth {
				errs += refused.Load()
			}
			report(t, row{scenario: "shutdown", fault: "Server.Shutdown in process, " + tt.name,
				load:     fmt.Sprintf("16 callers for 1s, 1 call in 50 takes 400ms; %d in flight at shutdown; %d refused once the listener closed", inFlight, refused.Load()),
				requests: sent.Load(), errors: errs, lost: failedInFlight.Load(), dups: -1,
				recoveryNote: fmt.Sprintf("drained in %v", drained.Round(time.Millisecond))})
			if failedInFlight.Load() != 0 {
				t.Errorf("%d calls in flight failed during the drain; first: %v", failedInFlight.Load(), first.get())
			}
			if tt.followsHealth && refused.Load() != 0 {
				t.Errorf("%d calls were refused although callers stopped on NOT_SERVING; first: %v", refused.Load(), first.get())
			}
			if err := <-d.done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Serve() = %v after the drain", err)
			}
			d.done <- nil // for the cleanup
		})
	}
}
