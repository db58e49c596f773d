package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig is a valid configuration on loopback, whose stub service is
// public.
func testConfig() service.Config {
	return service.Config{Authz: authz.Config{Rules: map[string]authz.Rule{"/" + stubserver.Service + "/*": {Public: true}}}, Service: service.Settings{
		Name:            "stub",
		Environment:     "test",
		ListenAddr:      "127.0.0.1:0",
		AdminAddr:       "127.0.0.1:0",
		ShutdownTimeout: 5 * time.Second,
		Limits: service.Limits{
			MaxRecvMsgBytes: 4 << 20, MaxSendMsgBytes: 4 << 20, MaxConcurrentStreams: 100,
			KeepaliveMinTime: 20 * time.Second,
		},
		Client: service.ClientSettings{Timeout: 10 * time.Second, RetryMaxAttempts: 3, RetryInitialBackoff: 10 * time.Millisecond, RetryMaxBackoff: 50 * time.Millisecond},
	}}
}

// productionConfig is testConfig in production, which requires an issuer.
// Nothing contacts it: the stub's methods are public.
func productionConfig() service.Config {
	cfg := testConfig()
	cfg.Service.Environment = service.Production
	cfg.Authn = authn.Config{Issuers: []authn.IssuerConfig{{URL: "https://id.example.com/realms/test", Audiences: []string{"stub"}}}}
	return cfg
}

// running is a served stub service and a client connection to it.
type running struct {
	srv   *service.Server
	conn  *grpc.ClientConn
	spans *tracetest.InMemoryExporter
	logs  *syncBuffer
	tel   *telemetry.Telemetry
	done  chan error
}

// registrar registers services on a server, as generated Register
// functions do.
type registrar interface{ Register(grpc.ServiceRegistrar) }

// registrars registers several.
type registrars []registrar

func (rs registrars) Register(r grpc.ServiceRegistrar) {
	for _, x := range rs {
		x.Register(r)
	}
}

func start(t *testing.T, cfg service.Config, stub registrar, opts ...service.Option) *running {
	t.Helper()
	r := &running{spans: tracetest.NewInMemoryExporter(), logs: &syncBuffer{}, done: make(chan error, 1)}
	var err error
	r.tel, err = telemetry.New(t.Context(), telemetry.Config{Prometheus: true},
		telemetry.WithSpanExporter(r.spans), telemetry.WithLogOutput(r.logs), telemetry.WithService(cfg.Service.Name, "", cfg.Service.Environment))
	if err != nil {
		t.Fatal(err)
	}
	r.srv, err = service.New(t.Context(), cfg, append([]service.Option{service.WithTelemetry(r.tel), service.WithoutSignals()}, opts...)...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	stub.Register(r.srv)
	if err := r.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.srv.Serve(context.Background()) }()
	r.conn, err = service.Dial(t.Context(), r.srv.Addr().String(), service.WithClientTelemetry(r.tel), service.WithClientSettings(cfg.Service.Client))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.conn.Close()
		r.srv.Shutdown(context.Background())
		<-r.done
	})
	waitServing(t, r.conn)
	return r
}

func waitServing(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("server not SERVING within 5s: %v %v", resp, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.srv.AdminAddr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func echo(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return in, nil
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*service.Config)
		want   []string
	}{
		{name: "valid", mutate: func(*service.Config) {}},
		{name: "no name", mutate: func(c *service.Config) { c.Service.Name = "" }, want: []string{"service.name: is required"}},
		{name: "bad fault method", mutate: func(c *service.Config) {
			c.Service.Faults.Rules = []service.FaultRule{{Method: "Stub/Unary", Delay: time.Second}}
		}, want: []string{`service.faults.rules[0].method: "Stub/Unary"`}},
		{name: "bad fault code", mutate: func(c *service.Config) {
			c.Service.Faults.Rules = []service.FaultRule{{Method: "/a.B/*", Abort: "BROKEN"}}
		}, want: []string{`service.faults.rules[0].abort: "BROKEN" is not a gRPC code name`}},
		{name: "empty fault rule", mutate: func(c *service.Config) {
			c.Service.Faults.Rules = []service.FaultRule{{Method: "/a.B/C"}}
		}, want: []string{"service.faults.rules[0]: sets neither delay nor abort"}},
		{name: "faults in production", mutate: func(c *service.Config) {
			c.Service.Environment = service.Production
			c.Service.Faults.Enabled = true
		}, want: []string{"fault injection refuses to run in production"}},
		{name: "backoff inverted", mutate: func(c *service.Config) {
			c.Service.Client.RetryMaxBackoff = time.Millisecond
		}, want: []string{"service.client.retry_max_backoff: 1ms is below retry_initial_backoff 10ms"}},
		{name: "dedup in redis without redis", mutate: func(c *service.Config) {
			c.Events.Dedup.Store = "redis"
		}, want: []string{"events.dedup.store: redis keeps processed event IDs in the cache's Redis, and cache.redis.addresses is empty"}},
		{name: "telemetry section checked too", mutate: func(c *service.Config) {
			c.Telemetry.Traces.Exporter = "zipkin"
		}, want: []string{`telemetry.traces.exporter: "zipkin"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, nerr := service.New(t.Context(), cfg, service.WithoutSignals()); nerr == nil {
				t.Errorf("New() = nil error, want the validation error")
			}
		})
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	stub := &stubserver.Stub{
		Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.GetValue() == "panic" {
				panic("secret-internal-detail")
			}
			return in, nil
		},
		Stream: func(grpc.ServerStream) error { panic("stream-secret-detail") },
	}
	r := start(t, testConfig(), stub)

	_, err := stubserver.Unary(t.Context(), r.conn, "panic")
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Errorf("unary panic: err = %v, want Internal with message %q", err, "internal error")
	}

	stream, err := stubserver.OpenStream(t.Context(), r.conn)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.RecvMsg(new(wrapperspb.StringValue))
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "secret") {
		t.Errorf("stream panic: err = %v, want Internal without the panic value", err)
	}

	if got, err := stubserver.Unary(t.Context(), r.conn, "still serving"); err != nil || got != "still serving" {
		t.Errorf("call after panics = %q, %v; want the server to keep serving", got, err)
	}
	logs := r.logs.String()
	for _, want := range []string{"handler panicked", "secret-internal-detail", "stream-secret-detail", "goroutine "} {
		if !strings.Contains(logs, want) {
			t.Errorf("log does not contain %q", want)
		}
	}
	// The server ends its spans just after the client sees the error.
	var exceptions int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		exceptions = 0
		for _, s := range r.spans.GetSpans() {
			for _, e := range s.Events {
				if e.Name == "exception" {
					exceptions++
				}
			}
		}
		if exceptions == 2 {
			break
		}
	}
	if exceptions != 2 {
		t.Errorf("spans carry %d exception events, want 2 (unary and stream)", exceptions)
	}
}

func TestNonStatusErrorIsHidden(t *testing.T) {
	r := start(t, testConfig(), &stubserver.Stub{
		Unary: func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			return nil, fmt.Errorf("connect to db at 10.1.2.3 with password hunter2: refused")
		},
	})
	_, err := stubserver.Unary(t.Context(), r.conn, "x")
	if status.Code(err) != codes.Unknown || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("err = %v, want Unknown without the handler's error text", err)
	}
	if !strings.Contains(r.logs.String(), "hunter2") {
		t.Error("the handler's error is not in the log")
	}
}

func TestDrain(t *testing.T) {
	cfg := testConfig()
	cfg.Service.DrainDelay = 300 * time.Millisecond
	entered, release := make(chan struct{}), make(chan struct{})
	r := start(t, cfg, &stubserver.Stub{
		Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.GetValue() == "slow" {
				close(entered)
				<-release
			}
			return in, nil
		},
	})
	// A second connection, opened before the drain, to observe it.
	observer, err := grpc.NewClient(r.srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	waitServing(t, observer)

	inflight := make(chan error, 1)
	go func() {
		_, err := stubserver.Unary(context.Background(), r.conn, "slow")
		inflight <- err
	}()
	<-entered

	shutdown := make(chan error, 1)
	go func() { shutdown <- r.srv.Shutdown(context.Background()) }()

	// During the drain delay: NOT_SERVING, /readyz 503, still answering.
	deadline := time.Now().Add(200 * time.Millisecond)
	var st healthpb.HealthCheckResponse_ServingStatus
	for time.Now().Before(deadline) {
		resp, err := healthpb.NewHealthClient(observer).Check(t.Context(), &healthpb.HealthCheckRequest{Service: stubserver.Service})
		if err == nil {
			st = resp.GetStatus()
			if st == healthpb.HealthCheckResponse_NOT_SERVING {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during drain = %v, want NOT_SERVING", st)
	}
	if code, body := r.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz during drain = %d %s, want 503 draining", code, body)
	}

	// After the delay: new RPCs are refused while the in-flight one runs.
	time.Sleep(cfg.Service.DrainDelay)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, err = stubserver.Unary(t.Context(), observer, "new")
		if status.Code(err) == codes.Unavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new RPC during drain: err = %v, want Unavailable", err)
		}
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown() returned %v while an RPC was in flight", err)
	default:
	}

	close(release)
	if err := <-inflight; err != nil {
		t.Errorf("in-flight RPC = %v, want it to finish", err)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if err := r.srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown() = %v, want nil (idempotent)", err)
	}
	if err := <-r.done; err != nil {
		t.Errorf("Serve() = %v, want nil after a clean drain", err)
	}
	r.done <- nil // for the cleanup
}

func TestShutdownTimeoutCancelsInFlight(t *testing.T) {
	cfg := testConfig()
	cfg.Service.ShutdownTimeout = 100 * time.Millisecond
	entered := make(chan struct{})
	r := start(t, cfg, &stubserver.Stub{
		Unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			close(entered)
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		},
	})
	inflight := make(chan error, 1)
	go func() {
		_, err := stubserver.Unary(context.Background(), r.conn, "stuck")
		inflight <- err
	}()
	<-entered
	begin := time.Now()
	if err := r.srv.Shutdown(context.Background()); !errors.Is(err, service.ErrCallsCut) {
		t.Errorf("Shutdown() = %v, want ErrCallsCut: the drain cancelled a call", err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Shutdown() took %v with a 100ms timeout", took)
	}
	if err := <-inflight; err == nil {
		t.Error("stuck RPC succeeded, want it cancelled by the hard stop")
	}
}

// quietTelemetry is a no-op telemetry whose logs go nowhere.
func quietTelemetry(t *testing.T) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

func TestServeStopsOnContextCancel(t *testing.T) {
	srv, err := service.New(t.Context(), testConfig(), service.WithTelemetry(quietTelemetry(t)), service.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	stub().Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	for srv.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve() after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve() did not return after its context was cancelled")
	}
	if err := srv.Serve(t.Context()); err == nil {
		t.Error("second Serve() = nil, want an error")
	}
}

func TestListenErrorNamesKey(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig()
	cfg.Service.ListenAddr = taken.Addr().String()
	srv, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t)), service.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	stub().Register(srv)
	if err := srv.Serve(t.Context()); err == nil || !strings.Contains(err.Error(), "service.listen_addr") {
		t.Errorf("Serve() on a taken port = %v, want an error naming service.listen_addr", err)
	}
}

func TestHealth(t *testing.T) {
	r := start(t, testConfig(), &stubserver.Stub{Unary: echo})
	hc := healthpb.NewHealthClient(r.conn)
	check := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q) = %v", svc, err)
		}
		return resp.GetStatus()
	}
	if got := check(stubserver.Service); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check(%s) = %v, want SERVING once Serve runs", stubserver.Service, got)
	}
	r.srv.SetServing(stubserver.Service, false)
	if got := check(stubserver.Service); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check(%s) after SetServing(false) = %v, want NOT_SERVING", stubserver.Service, got)
	}
	if got := check(""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check(\"\") = %v, want SERVING: one service's status does not change the server's", got)
	}
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "no.such.Service"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown service) = %v, want NotFound", err)
	}
}

func listServices(t *testing.T, conn *grpc.ClientConn) ([]string, error) {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		return nil, err
	}
	// Send reports io.EOF when the server has ended the stream; Recv then
	// returns its status.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func TestReflection(t *testing.T) {
	on, off := true, false
	tests := []struct {
		name       string
		env        string
		reflection *bool
		want       bool
	}{
		{name: "on by default in development", env: "development", want: true},
		{name: "off by default in production", env: service.Production, want: false},
		{name: "off by config", env: "staging", reflection: &off, want: false},
		{name: "on by config in production", env: service.Production, reflection: &on, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.env == service.Production {
				cfg = productionConfig()
			}
			cfg.Service.Environment, cfg.Service.Reflection = tt.env, tt.reflection
			r := start(t, cfg, &stubserver.Stub{Unary: echo})
			names, err := listServices(t, r.conn)
			if !tt.want {
				if status.Code(err) != codes.Unimplemented {
					t.Errorf("reflection in %s = %v, %v; want Unimplemented", tt.env, names, err)
				}
				return
			}
			if err != nil || !strings.Contains(strings.Join(names, " "), stubserver.Service) {
				t.Errorf("reflection in %s = %v, %v; want the stub service listed", tt.env, names, err)
			}
		})
	}
}

// degradedErr is a readiness error that keeps the service ready.
type degradedErr struct{ error }

func (degradedErr) Degraded() bool { return true }

func TestAdmin(t *testing.T) {
	cfg := testConfig()
	r := start(t, cfg, &stubserver.Stub{Unary: echo})
	if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
		t.Fatal(err)
	}

	if code, body := r.get(t, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, body := r.get(t, "/readyz"); code != http.StatusOK || !strings.Contains(body, `"status":"ready"`) {
		t.Errorf("/readyz = %d %s, want 200 ready", code, body)
	}
	var redisUp atomic.Bool
	redisUp.Store(true)
	r.srv.AddReadinessCheck("redis", func(context.Context) error {
		if redisUp.Load() {
			return nil
		}
		return errors.New("dial tcp 127.0.0.1:6379: connection refused")
	})
	if code, body := r.get(t, "/readyz"); code != http.StatusOK || !strings.Contains(body, `"redis":"ok"`) {
		t.Errorf("/readyz with a passing check = %d %s, want 200 with redis ok", code, body)
	}
	redisUp.Store(false)
	code, body := r.get(t, "/readyz")
	var res struct {
		Status string
		Checks map[string]string
	}
	json.Unmarshal([]byte(body), &res)
	if code != http.StatusServiceUnavailable || res.Status != "not ready" || !strings.Contains(res.Checks["redis"], "connection refused") {
		t.Errorf("/readyz with a failing check = %d %s, want 503 naming the check and its error", code, body)
	}
	redisUp.Store(true)
	r.srv.AddReadinessCheck("cache", func(context.Context) error {
		return degradedErr{errors.New("redis tier down, serving from process memory")}
	})
	code, body = r.get(t, "/readyz")
	json.Unmarshal([]byte(body), &res)
	if code != http.StatusOK || res.Status != "degraded" || !strings.HasPrefix(res.Checks["cache"], "degraded: redis tier down") {
		t.Errorf("/readyz with a degraded check = %d %s, want 200 degraded naming the check", code, body)
	}
	if code, body := r.get(t, "/metrics"); code != http.StatusOK || !strings.Contains(body, `rpc_server_call_duration_seconds_count{`) {
		t.Errorf("/metrics = %d, want 200 with rpc_server_call_duration_seconds", code)
	}
	if code, _ := r.get(t, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ with pprof off = %d, want 404", code)
	}

	cfg.Service.Pprof = true
	withPprof := start(t, cfg, &stubserver.Stub{Unary: echo})
	if code, body := withPprof.get(t, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ with pprof on = %d, want 200", code)
	}
}

func TestFaultInjection(t *testing.T) {
	counting := func(calls *atomic.Int32) *stubserver.Stub {
		return &stubserver.Stub{Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			calls.Add(1)
			return in, nil
		}}
	}
	t.Run("off by default: headers are ignored", func(t *testing.T) {
		var calls atomic.Int32
		r := start(t, testConfig(), counting(&calls))
		ctx := metadata.AppendToOutgoingContext(t.Context(), service.FaultAbortHeader, "UNAVAILABLE")
		if _, err := stubserver.Unary(ctx, r.conn, "x"); err != nil {
			t.Errorf("call with a fault header and faults off = %v, want success", err)
		}
	})
	t.Run("rule aborts and delays", func(t *testing.T) {
		cfg := testConfig()
		cfg.Service.Faults = service.Faults{Enabled: true, Rules: []service.FaultRule{
			{Method: stubserver.UnaryMethod, Delay: 50 * time.Millisecond, Abort: "RESOURCE_EXHAUSTED"},
		}}
		var calls atomic.Int32
		r := start(t, cfg, counting(&calls))
		begin := time.Now()
		_, err := stubserver.Unary(t.Context(), r.conn, "x")
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("call = %v, want the injected ResourceExhausted", err)
		}
		if took := time.Since(begin); took < 50*time.Millisecond {
			t.Errorf("call took %v, want at least the injected 50ms", took)
		}
		if calls.Load() != 0 {
			t.Errorf("handler ran %d times, want 0: an abort replaces it", calls.Load())
		}
	})
	t.Run("service wildcard with zero percent leaves calls alone", func(t *testing.T) {
		cfg := testConfig()
		cfg.Service.Faults = service.Faults{Enabled: true, Rules: []service.FaultRule{
			{Method: "/loam.test.v1.Stub/*", Abort: "UNAVAILABLE", Percent: new(0.0)},
		}}
		var calls atomic.Int32
		r := start(t, cfg, counting(&calls))
		for range 20 {
			stubserver.Unary(t.Context(), r.conn, "x")
		}
		if calls.Load() != 20 {
			t.Errorf("handler ran %d of 20 times at percent 0, want all", calls.Load())
		}
	})
	t.Run("from headers", func(t *testing.T) {
		cfg := testConfig()
		cfg.Service.Faults = service.Faults{Enabled: true, FromHeaders: true}
		var calls atomic.Int32
		r := start(t, cfg, counting(&calls))
		ctx := metadata.AppendToOutgoingContext(t.Context(), service.FaultAbortHeader, "unavailable")
		if _, err := stubserver.Unary(ctx, r.conn, "x"); status.Code(err) != codes.Unavailable {
			t.Errorf("call asking for UNAVAILABLE = %v", err)
		}
		ctx = metadata.AppendToOutgoingContext(t.Context(), service.FaultDelayHeader, "soon")
		if _, err := stubserver.Unary(ctx, r.conn, "x"); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "loam-fault-delay") {
			t.Errorf("call with a bad delay header = %v, want InvalidArgument naming the header", err)
		}
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), service.FaultDelayHeader, "10s"), 50*time.Millisecond)
		defer cancel()
		if _, err := stubserver.Unary(ctx, r.conn, "x"); status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("call delayed past its deadline = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("refused in production", func(t *testing.T) {
		cfg := productionConfig()
		cfg.Service.Faults = service.Faults{Enabled: true, FromHeaders: true}
		if _, err := service.New(t.Context(), cfg, service.WithoutSignals()); err == nil || !strings.Contains(err.Error(), "allow_in_production") {
			t.Errorf("New() with faults in production = %v, want a refusal naming allow_in_production", err)
		}
		cfg.Service.Faults.AllowInProduction = true
		var calls atomic.Int32
		r := start(t, cfg, counting(&calls))
		ctx := metadata.AppendToOutgoingContext(t.Context(), service.FaultAbortHeader, "ABORTED")
		if _, err := stubserver.Unary(ctx, r.conn, "x"); status.Code(err) != codes.Aborted {
			t.Errorf("explicitly allowed in production: call = %v, want Aborted", err)
		}
	})
}

// TestTraceAcrossServices follows one call from a client through service A,
// which calls service B, and checks that every span is in one trace with the
// right parents, and that RPC metrics reach /metrics.
func TestTraceAcrossServices(t *testing.T) {
	// Inside the trust boundary: methods that are not public, served
	// without authentication in development.
	cfg := testConfig()
	cfg.Service.AllowUnauthenticated = true
	cfg.Authz.Rules = map[string]authz.Rule{"/" + stubserver.Service + "/*": {Authenticated: true}}
	b := start(t, cfg, &stubserver.Stub{Unary: echo})
	var a *running
	a = start(t, cfg, &stubserver.Stub{
		Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			conn, err := a.srv.Dial(ctx, b.srv.Addr().String())
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			out, err := stubserver.Unary(ctx, conn, "nested:"+in.GetValue())
			return wrapperspb.String(out), err
		},
	})
	// The test's own client uses b's telemetry, so the root span is
	// recorded apart from a's.
	client, err := service.Dial(t.Context(), a.srv.Addr().String(), service.WithClientTelemetry(b.tel))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	got, err := stubserver.Unary(t.Context(), client, "hi")
	if err != nil || got != "nested:hi" {
		t.Fatalf("call = %q, %v", got, err)
	}

	find := func(spans tracetest.SpanStubs, kind trace.SpanKind) tracetest.SpanStub {
		for _, s := range spans {
			if s.SpanKind == kind && s.Name == "loam.test.v1.Stub/Unary" {
				return s
			}
		}
		t.Fatalf("no %v span", kind)
		return tracetest.SpanStub{}
	}
	// b records the root client span and B's server span; a records A's
	// server span and its nested client span. Servers end their spans just
	// after the client sees the response.
	aSpans, bSpans := waitSpans(t, a.spans, 2), waitSpans(t, b.spans, 2)
	root := find(bSpans, trace.SpanKindClient)
	serverA := find(aSpans, trace.SpanKindServer)
	nested := find(aSpans, trace.SpanKindClient)
	var serverB tracetest.SpanStub
	for _, s := range bSpans {
		if s.SpanKind == trace.SpanKindServer && s.Parent.SpanID() == nested.SpanContext.SpanID() {
			serverB = s
		}
	}
	chain := []struct {
		name          string
		child, parent tracetest.SpanStub
	}{
		{"A's server span under the client", serverA, root},
		{"A's outgoing span under A's server span", nested, serverA},
		{"B's server span under A's outgoing span", serverB, nested},
	}
	for _, c := range chain {
		if c.child.Parent.SpanID() != c.parent.SpanContext.SpanID() || c.child.SpanContext.TraceID() != root.SpanContext.TraceID() {
			t.Errorf("%s: parent %s trace %s, want parent %s trace %s", c.name,
				c.child.Parent.SpanID(), c.child.SpanContext.TraceID(), c.parent.SpanContext.SpanID(), root.SpanContext.TraceID())
		}
	}
	if _, body := a.get(t, "/metrics"); !strings.Contains(body, `rpc_client_call_duration_seconds_count{`) || !strings.Contains(body, `rpc_server_call_duration_seconds_count{`) {
		t.Errorf("/metrics of A lacks client or server RPC durations")
	}
}

func TestDial(t *testing.T) {
	t.Run("retries UNAVAILABLE on retry methods", func(t *testing.T) {
		var calls atomic.Int32
		r := start(t, testConfig(), &stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if calls.Add(1) < 3 {
				return nil, status.Error(codes.Unavailable, "warming up")
			}
			return in, nil
		}})
		conn, err := service.Dial(t.Context(), r.srv.Addr().String(), service.WithClientSettings(testConfig().Service.Client),
			service.WithRetryMethods(stubserver.UnaryMethod))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := stubserver.Unary(t.Context(), conn, "x"); err != nil || calls.Load() != 3 {
			t.Errorf("call = %v after %d attempts, want success on the third", err, calls.Load())
		}
	})
	t.Run("does not retry other methods", func(t *testing.T) {
		var calls atomic.Int32
		r := start(t, testConfig(), &stubserver.Stub{Unary: func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			calls.Add(1)
			return nil, status.Error(codes.Unavailable, "down")
		}})
		if _, err := stubserver.Unary(t.Context(), r.conn, "x"); status.Code(err) != codes.Unavailable || calls.Load() != 1 {
			t.Errorf("call = %v after %d attempts, want Unavailable after 1", err, calls.Load())
		}
	})
	t.Run("default deadline", func(t *testing.T) {
		r := start(t, testConfig(), &stubserver.Stub{Unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}})
		settings := testConfig().Service.Client
		settings.Timeout = 50 * time.Millisecond
		conn, err := service.Dial(t.Context(), r.srv.Addr().String(), service.WithClientSettings(settings))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := stubserver.Unary(context.Background(), conn, "x"); status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("call without a deadline = %v, want DeadlineExceeded from the default", err)
		}
	})
	t.Run("per-RPC credentials", func(t *testing.T) {
		r := start(t, testConfig(), &stubserver.Stub{Unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			return wrapperspb.String(strings.Join(metadata.ValueFromIncomingContext(ctx, "authorization"), ",")), nil
		}})
		conn, err := service.Dial(t.Context(), r.srv.Addr().String(), service.WithPerRPCCredentials(bearer("t0ken")))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if got, err := stubserver.Unary(t.Context(), conn, "x"); err != nil || got != "Bearer t0ken" {
			t.Errorf("server saw authorization %q, %v; want Bearer t0ken", got, err)
		}
	})
	t.Run("bad retry method", func(t *testing.T) {
		if _, err := service.Dial(t.Context(), "127.0.0.1:1", service.WithRetryMethods("Stub.Unary")); err == nil || !strings.Contains(err.Error(), `"Stub.Unary"`) {
			t.Errorf("Dial() with a malformed retry method = %v, want an error naming it", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := service.Dial(ctx, "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
			t.Errorf("Dial() with a cancelled context = %v, want context.Canceled", err)
		}
	})
}

// waitSpans waits until exp holds n spans, and returns them.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if spans := exp.GetSpans(); len(spans) >= n {
			return spans
		}
	}
	t.Fatalf("got %d spans within 2s, want %d", len(exp.GetSpans()), n)
	return nil
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// TestInterceptorOrder checks the documented chain: recovery outermost, then
// authentication, authorization, the application's, and the handler.
func TestInterceptorOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	slot := func(name string) service.Interceptor {
		return service.InterceptorFuncs(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return h(ctx, req)
		}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, ss)
		})
	}
	r := start(t, testConfig(), &stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		mu.Lock()
		order = append(order, "handler")
		mu.Unlock()
		panic("after every slot")
	}},
		service.WithInterceptors(slot("app1"), slot("app2")),
		service.WithAuthorization(slot("authz")),
		service.WithAuthentication(slot("authn")),
	)
	mu.Lock()
	order = nil // forget the health checks of start
	mu.Unlock()
	_, err := stubserver.Unary(t.Context(), r.conn, "x")
	if status.Code(err) != codes.Internal {
		t.Errorf("call = %v, want Internal: recovery must wrap every slot", err)
	}
	want := "authn authz app1 app2 handler"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("interceptor order = %q, want %q", got, want)
	}
}

// TestOnShutdownRunsAfterDrain checks that shutdown hooks run once the
// handlers in flight have returned, in reverse order, and that their errors
// reach Shutdown's caller.
func TestOnShutdownRunsAfterDrain(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	r := start(t, testConfig(), &stubserver.Stub{Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		close(entered)
		<-release
		returned.Store(true)
		return in, nil
	}})
	var order []string
	r.srv.OnShutdown(func(context.Context) error {
		order = append(order, fmt.Sprintf("first registered, handler returned: %v", returned.Load()))
		return errors.New("pool: closing")
	})
	r.srv.OnShutdown(func(context.Context) error {
		order = append(order, "second registered")
		return nil
	})
	go stubserver.Unary(context.Background(), r.conn, "slow")
	<-entered
	shutdown := make(chan error, 1)
	go func() { shutdown <- r.srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // let the drain begin
	close(release)
	err := <-shutdown
	if err == nil || !strings.Contains(err.Error(), "pool: closing") {
		t.Errorf("Shutdown() = %v, want the hook's error", err)
	}
	want := []string{"second registered", "first registered, handler returned: true"}
	if !slices.Equal(order, want) {
		t.Errorf("hooks ran as %q, want %q", order, want)
	}
	<-r.done
	r.done <- nil // for the cleanup
}

// TestOnShutdownAfterShutdown registers a hook on a server that has shut
// down: it runs at once rather than never.
func TestOnShutdownAfterShutdown(t *testing.T) {
	r := start(t, testConfig(), &stubserver.Stub{})
	if err := r.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ran := false
	r.srv.OnShutdown(func(context.Context) error { ran = true; return nil })
	if !ran {
		t.Error("a hook registered after Shutdown never ran")
	}
}
