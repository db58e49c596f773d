package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/telemetry"
)

func ratio(r float64) *float64 { return &r }

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  telemetry.Config
		want []string // substrings of the error; none means valid
	}{
		{name: "zero value", cfg: telemetry.Config{}},
		{name: "everything set", cfg: telemetry.Config{
			Traces:        telemetry.Export{Exporter: "otlp", Endpoint: "collector:4317", Insecure: true},
			Metrics:       telemetry.Export{Exporter: "otlp", Protocol: "http/protobuf", Endpoint: "https://collector:4318/v1/metrics"},
			Logs:          telemetry.Export{Exporter: "stdout"},
			SamplingRatio: ratio(0.01), Prometheus: true, LogLevel: "debug", LogFormat: "text",
		}},
		{name: "unknown exporter", cfg: telemetry.Config{Traces: telemetry.Export{Exporter: "jaeger"}},
			want: []string{`telemetry.traces.exporter: "jaeger" is not none, stdout or otlp`}},
		{name: "unknown protocol", cfg: telemetry.Config{Metrics: telemetry.Export{Exporter: "otlp", Protocol: "http/json"}},
			want: []string{`telemetry.metrics.protocol: "http/json" is not grpc or http/protobuf`}},
		{name: "url for grpc", cfg: telemetry.Config{Logs: telemetry.Export{Exporter: "otlp", Endpoint: "http://collector:4317"}},
			want: []string{`telemetry.logs.endpoint: "http://collector:4317": the grpc protocol takes host:port`}},
		{name: "host:port for http", cfg: telemetry.Config{Traces: telemetry.Export{Exporter: "otlp", Protocol: "http/protobuf", Endpoint: "collector:4318"}},
			want: []string{`telemetry.traces.endpoint: "collector:4318": the http/protobuf protocol takes an http or https URL`}},
		{name: "endpoint without otlp", cfg: telemetry.Config{Traces: telemetry.Export{Endpoint: "collector:4317"}},
			want: []string{`telemetry.traces.endpoint: set, but exporter "none" sends nowhere`}},
		{name: "ratio above one", cfg: telemetry.Config{SamplingRatio: ratio(1.5)},
			want: []string{"telemetry.sampling_ratio: 1.5 is not between 0 and 1"}},
		{name: "every problem at once", cfg: telemetry.Config{SamplingRatio: ratio(-0.1), LogLevel: "verbose", LogFormat: "xml"},
			want: []string{"telemetry.sampling_ratio", `telemetry.log_level: "verbose"`, `telemetry.log_format: "xml"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, nerr := telemetry.New(t.Context(), tt.cfg); nerr == nil {
				t.Errorf("New() with an invalid config = nil error, want %v", err)
			}
		})
	}
}

func TestNewZeroConfigIsNoop(t *testing.T) {
	var logs bytes.Buffer
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithLogOutput(&logs))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider().Tracer("x").Start(t.Context(), "op")
	if span.IsRecording() {
		t.Error("span of a zero-config Telemetry is recording, want the no-op tracer")
	}
	if tel.MetricsHandler() != nil {
		t.Error("MetricsHandler() != nil with Prometheus off")
	}
	tel.Logger().Info("hello")
	if !strings.Contains(logs.String(), `"msg":"hello"`) {
		t.Errorf("log output = %q, want a JSON line with msg hello", logs.String())
	}
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Errorf("second Shutdown() = %v, want nil (idempotent)", err)
	}
}

// rig is a gRPC server and client on loopback, both instrumented by tel.
type rig struct {
	conn *grpc.ClientConn
	stub *stubserver.Stub
}

func newRig(t *testing.T, tel *telemetry.Telemetry, serverOpts ...telemetry.HandlerOption) *rig {
	t.Helper()
	r := &rig{stub: &stubserver.Stub{
		Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.GetValue() == "fail" {
				return nil, status.Error(codes.Internal, "it broke")
			}
			if in.GetValue() == "bad" {
				return nil, status.Error(codes.InvalidArgument, "bad request")
			}
			return in, nil
		},
	}}
	r.conn = serve(t, func(srv grpc.ServiceRegistrar) {
		r.stub.Register(srv)
		healthpb.RegisterHealthServer(srv, health.NewServer())
	}, []grpc.ServerOption{grpc.StatsHandler(tel.ServerHandler(serverOpts...))}, grpc.WithStatsHandler(tel.ClientHandler()))
	return r
}

// serve starts a gRPC server on loopback with opts and the services that
// register adds, and returns a plaintext client connection to it; both
// stop when the test ends.
func serve(t *testing.T, register func(grpc.ServiceRegistrar), opts []grpc.ServerOption, dial ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func spanByKind(t *testing.T, spans tracetest.SpanStubs, kind trace.SpanKind) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.SpanKind == kind {
			return s
		}
	}
	t.Fatalf("no %v span among %d spans", kind, len(spans))
	return tracetest.SpanStub{}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func scrape(t *testing.T, tel *telemetry.Telemetry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func TestGRPCHandlers(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(t.Context(), telemetry.Config{Prometheus: true},
		telemetry.WithSpanExporter(spans), telemetry.WithService("trees", "1.2.3", "test"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, tel)

	for _, in := range []string{"hello", "fail", "bad"} {
		stubserver.Unary(t.Context(), r.conn, in)
	}
	if _, err := healthpb.NewHealthClient(r.conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health Check() = %v", err)
	}

	t.Run("spans", func(t *testing.T) {
		// Servers end their spans just after the client sees the reply.
		var got tracetest.SpanStubs
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if got = spans.GetSpans(); len(got) >= 6 {
				break
			}
		}
		if len(got) != 6 {
			t.Fatalf("got %d spans, want 6: a client and a server span for each of 3 calls, none for health", len(got))
		}
		// Each call is one trace of a client and a server span; name the
		// calls by the code their server span recorded.
		calls := map[string][]tracetest.SpanStub{}
		byTrace := map[trace.TraceID][]tracetest.SpanStub{}
		for _, s := range got {
			byTrace[s.SpanContext.TraceID()] = append(byTrace[s.SpanContext.TraceID()], s)
		}
		for _, pair := range byTrace {
			if len(pair) == 2 {
				calls[attr(spanByKind(t, pair, trace.SpanKindServer), "rpc.response.status_code")] = pair
			}
		}
		if len(calls) != 3 {
			t.Fatalf("spans form calls %v, want OK, INTERNAL and INVALID_ARGUMENT, each with a client and a server span", calls)
		}
		client, server := spanByKind(t, calls["OK"], trace.SpanKindClient), spanByKind(t, calls["OK"], trace.SpanKindServer)
		if server.Parent.SpanID() != client.SpanContext.SpanID() {
			t.Errorf("server span parent = %v, want the client span %v", server.Parent, client.SpanContext)
		}
		if server.Name != "loam.test.v1.Stub/Unary" {
			t.Errorf("server span name = %q, want loam.test.v1.Stub/Unary", server.Name)
		}
		for key, want := range map[string]string{"rpc.system.name": "grpc", "rpc.method": "loam.test.v1.Stub/Unary", "rpc.response.status_code": "OK"} {
			if got := attr(server, key); got != want {
				t.Errorf("server span %s = %q, want %q", key, got, want)
			}
		}
		if got := server.Resource.Set(); !got.HasValue("service.name") || !got.HasValue("deployment.environment.name") {
			t.Errorf("resource = %v, want service.name and deployment.environment.name", got)
		}
		failed := spanByKind(t, calls["INTERNAL"], trace.SpanKindServer)
		if failed.Status.Code.String() != "Error" || attr(failed, "error.type") != "INTERNAL" {
			t.Errorf("server span of an Internal error: status %v, error.type %q; want Error, INTERNAL", failed.Status, attr(failed, "error.type"))
		}
		bad := spanByKind(t, calls["INVALID_ARGUMENT"], trace.SpanKindServer)
		if bad.Status.Code.String() == "Error" || attr(bad, "error.type") != "" {
			t.Errorf("server span of InvalidArgument: status %v, error.type %q; a caller's mistake is not a server error", bad.Status, attr(bad, "error.type"))
		}
	})

	t.Run("metrics", func(t *testing.T) {
		body := scrape(t, tel)
		for _, want := range []string{
			`rpc_server_call_duration_seconds_count{otel_scope_name="github.com/loamhq/loam/telemetry",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",rpc_method="loam.test.v1.Stub/Unary",rpc_response_status_code="OK",rpc_system_name="grpc"} 1`,
			`error_type="INTERNAL",otel_scope_name="github.com/loamhq/loam/telemetry"`,
			`rpc_client_call_duration_seconds_count{error_type="INVALID_ARGUMENT"`,
			`go_goroutines`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics does not contain %s\n%s", want, grep(body, "rpc_"))
			}
		}
		if strings.Contains(body, "grpc.health.v1") {
			t.Errorf("/metrics records health checks:\n%s", grep(body, "health"))
		}
	})
}

func grep(body, substr string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestPublicEndpoint sends a trace context from outside: a public method
// starts its own trace and links the caller's, a private one continues it.
func TestPublicEndpoint(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	public := func(m string) bool { return m == stubserver.UnaryMethod }
	conn := serve(t, (&stubserver.Stub{Unary: echo}).Register, []grpc.ServerOption{grpc.StatsHandler(tel.ServerHandler(telemetry.PublicEndpoint(public)))})

	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", traceparent)
	if _, err := stubserver.Unary(ctx, conn, "x"); err != nil {
		t.Fatal(err)
	}
	var got tracetest.SpanStubs
	for deadline := time.Now().Add(2 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got = spans.GetSpans() // the server ends its span just after replying
	}
	if len(got) != 1 {
		t.Fatalf("got %d spans, want 1", len(got))
	}
	s := got[0]
	if s.Parent.IsValid() || s.SpanContext.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("public endpoint span continues the caller's trace (parent %v), want a new root", s.Parent)
	}
	if len(s.Links) != 1 || s.Links[0].SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("public endpoint span links = %v, want one link to the caller's span", s.Links)
	}
}

// TestUnsampledCallsKeepTraceContext checks the calls that are not
// recorded: a new trace that loses the sampling draw still gets a trace ID,
// marked unsampled, that reaches the handler and the callee; a call whose
// parent is unsampled keeps the parent's trace.
func TestUnsampledCallsKeepTraceContext(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(t.Context(), telemetry.Config{SamplingRatio: ratio(0)}, telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	conn := serve(t, (&stubserver.Stub{Unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		sc := trace.SpanContextFromContext(ctx)
		return wrapperspb.String(fmt.Sprintf("%s %v", sc.TraceID(), sc.IsSampled())), nil
	}}).Register, []grpc.ServerOption{grpc.StatsHandler(tel.ServerHandler())})

	got, err := stubserver.Unary(t.Context(), conn, "")
	if err != nil {
		t.Fatal(err)
	}
	if traceID, sampled, _ := strings.Cut(got, " "); traceID == "00000000000000000000000000000000" || sampled != "false" {
		t.Errorf("handler of an unsampled new trace saw %q, want a valid trace ID, unsampled", got)
	}
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	got, err = stubserver.Unary(metadata.AppendToOutgoingContext(t.Context(), "traceparent", parent), conn, "")
	if err != nil || got != "0af7651916cd43dd8448eb211c80319c false" {
		t.Errorf("handler under an unsampled parent saw %q, %v; want the parent's trace, unsampled", got, err)
	}
	if n := len(spans.GetSpans()); n != 0 {
		t.Errorf("ratio 0 exported %d spans, want 0", n)
	}

	// A sampled parent is followed whatever the ratio.
	const sampledParent = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	got, err = stubserver.Unary(metadata.AppendToOutgoingContext(t.Context(), "traceparent", sampledParent), conn, "")
	if err != nil || got != "1af7651916cd43dd8448eb211c80319c true" {
		t.Errorf("handler under a sampled parent saw %q, %v; want the parent's trace, sampled", got, err)
	}
}

// logRecorder is an OpenTelemetry log exporter that keeps what it is given.
type logRecorder struct {
	mu      sync.Mutex
	records []sdklog.Record
}

func (r *logRecorder) Export(_ context.Context, rs []sdklog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range rs {
		r.records = append(r.records, rec.Clone())
	}
	return nil
}
func (r *logRecorder) Shutdown(context.Context) error   { return nil }
func (r *logRecorder) ForceFlush(context.Context) error { return nil }

func TestLogHandler(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(t.Context(), "op")
	defer span.End()
	sc := span.SpanContext()

	t.Run("stamps trace and span ids", func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&buf, nil), nil)).With("component", "x")
		log.InfoContext(ctx, "in span")
		log.InfoContext(t.Context(), "no span")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		var first, second map[string]any
		json.Unmarshal([]byte(lines[0]), &first)
		json.Unmarshal([]byte(lines[1]), &second)
		if first["trace_id"] != sc.TraceID().String() || first["span_id"] != sc.SpanID().String() || first["component"] != "x" {
			t.Errorf("record in a span = %v, want trace_id %s, span_id %s and component", first, sc.TraceID(), sc.SpanID())
		}
		if _, ok := second["trace_id"]; ok {
			t.Errorf("record without a span = %v, want no trace_id", second)
		}
	})

	t.Run("bridges to the OpenTelemetry logger", func(t *testing.T) {
		rec := &logRecorder{}
		lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(rec)))
		log := slog.New(telemetry.NewLogHandler(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}), lp))
		log.InfoContext(ctx, "below the level")
		log.WarnContext(ctx, "bridged", "n", 1)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.records) != 1 {
			t.Fatalf("bridge got %d records, want 1 (the info record is below the level)", len(rec.records))
		}
		r := rec.records[0]
		if r.Body().AsString() != "bridged" || r.TraceID() != sc.TraceID() || r.Severity() != otellog.SeverityWarn {
			t.Errorf("bridged record = %q trace %s severity %v, want bridged, %s, WARN", r.Body().AsString(), r.TraceID(), r.Severity(), sc.TraceID())
		}
	})
}

func TestMessagePropagation(t *testing.T) {
	tel, err := telemetry.Setup(t.Context(), telemetry.Config{}, telemetry.WithSpanExporter(tracetest.NewInMemoryExporter()), telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	ctx, span := tel.TracerProvider().Tracer("t").Start(t.Context(), "publish")
	defer span.End()

	for _, carrier := range []propagation.TextMapCarrier{propagation.MapCarrier{}, telemetry.HeaderCarrier{}} {
		telemetry.Inject(ctx, carrier)
		if carrier.Get("traceparent") == "" {
			t.Fatalf("Inject(%T) wrote keys %v, want traceparent", carrier, carrier.Keys())
		}
		got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), carrier))
		if got.TraceID() != span.SpanContext().TraceID() || !got.IsRemote() {
			t.Errorf("Extract(%T) = %v, want the remote span context of trace %s", carrier, got, span.SpanContext().TraceID())
		}
		link, ok := telemetry.Link(context.Background(), carrier)
		if !ok || link.SpanContext.SpanID() != span.SpanContext().SpanID() {
			t.Errorf("Link(%T) = %v, %v; want a link to span %s", carrier, link, ok, span.SpanContext().SpanID())
		}
	}
	if _, ok := telemetry.Link(context.Background(), propagation.MapCarrier{"traceparent": "garbage"}); ok {
		t.Error("Link() with a malformed traceparent = ok, want false")
	}
}

func TestStdoutExporters(t *testing.T) {
	var out bytes.Buffer
	tel, err := telemetry.New(t.Context(), telemetry.Config{
		Traces: telemetry.Export{Exporter: "stdout"},
		Logs:   telemetry.Export{Exporter: "stdout"},
	}, telemetry.WithStdout(&out), telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tel.TracerProvider().Tracer("t").Start(t.Context(), "exported-span")
	tel.Logger().InfoContext(ctx, "exported-log")
	span.End()
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	for _, want := range []string{`"Name":"exported-span"`, `exported-log`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout after Shutdown does not contain %s:\n%s", want, out.String())
		}
	}
}

// TestOTLPCollectorDown checks that an unreachable collector neither stops
// the service from starting nor hangs its shutdown past the deadline.
func TestOTLPCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tel, err := telemetry.New(t.Context(), telemetry.Config{
		Traces:  telemetry.Export{Exporter: "otlp", Endpoint: addr, Insecure: true},
		Metrics: telemetry.Export{Exporter: "otlp", Protocol: "http/protobuf", Endpoint: "http://" + addr, Insecure: true},
		Logs:    telemetry.Export{Exporter: "otlp", Endpoint: addr, Insecure: true},
	}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatalf("New() with a collector down = %v, want nil (exporters connect lazily)", err)
	}
	_, span := tel.TracerProvider().Tracer("t").Start(t.Context(), "lost")
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 2e9)
	defer cancel()
	err = tel.Shutdown(ctx)
	if ctx.Err() != nil && err == nil {
		t.Errorf("Shutdown() hit its deadline but returned nil")
	}
}

// TestPassThrough checks that a Telemetry that records nothing still carries
// a caller's trace context through the server to the calls it makes.
func TestPassThrough(t *testing.T) {
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if tel.Recording() {
		t.Fatal("Recording() = true for the zero Config")
	}
	recording, err := telemetry.New(t.Context(), telemetry.Config{Prometheus: true}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if !recording.Recording() {
		t.Error("Recording() = false with Prometheus on")
	}

	// Downstream echoes the traceparent it receives.
	cu, cs := tel.ClientPassThrough()
	downConn := serve(t, (&stubserver.Stub{Unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return wrapperspb.String(strings.Join(metadata.ValueFromIncomingContext(ctx, "traceparent"), ",")), nil
	}}).Register, nil, grpc.WithChainUnaryInterceptor(cu), grpc.WithChainStreamInterceptor(cs))

	// Middle passes the context on to downstream.
	su, ss := tel.ServerPassThrough()
	midConn := serve(t, (&stubserver.Stub{Unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		got, err := stubserver.Unary(ctx, downConn, "")
		return wrapperspb.String(got), err
	}}).Register, []grpc.ServerOption{grpc.ChainUnaryInterceptor(su), grpc.ChainStreamInterceptor(ss)})

	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	got, err := stubserver.Unary(metadata.AppendToOutgoingContext(t.Context(), "traceparent", traceparent), midConn, "")
	if err != nil || got != traceparent {
		t.Errorf("downstream saw traceparent %q, %v; want %q passed through", got, err, traceparent)
	}
	if got, err := stubserver.Unary(t.Context(), midConn, ""); err != nil || got != "" {
		t.Errorf("downstream saw traceparent %q, %v; want none when the caller sent none", got, err)
	}
}

func echo(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return in, nil
}

func TestSetLogLevelAndDurations(t *testing.T) {
	var out bytes.Buffer // the test logs from one goroutine
	tel, err := telemetry.New(t.Context(), telemetry.Config{LogLevel: "info"}, telemetry.WithLogOutput(&out))
	if err != nil {
		t.Fatal(err)
	}
	log := tel.Logger()
	log.Debug("hidden")
	if err := tel.SetLogLevel("debug"); err != nil {
		t.Fatal(err)
	}
	log.Debug("shown", "timeout", 1500*time.Millisecond)
	if err := tel.SetLogLevel("loud"); err == nil {
		t.Error("SetLogLevel(loud) = nil, want an error")
	}
	got := out.String()
	if strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) {
		t.Errorf("log after SetLogLevel(debug) = %s", got)
	}
	if !strings.Contains(got, `"timeout":"1.5s"`) {
		t.Errorf("log = %s, want the duration as 1.5s", got)
	}
	if err := telemetry.Global().SetLogLevel("debug"); err == nil {
		t.Error("Global().SetLogLevel = nil, want an error: it does not own slog's default")
	}
}

// TestServerRecorder: the recorder's interceptors record what the stats
// handler records, a span under the caller and the duration by method and
// code, without a stats handler.
func TestServerRecorder(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(t.Context(), telemetry.Config{Prometheus: true}, telemetry.WithSpanExporter(spans), telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	rec := tel.ServerRecorder(telemetry.Methods(stubserver.UnaryMethod))
	conn := serve(t, (&stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "fail" {
			return nil, status.Error(codes.Internal, "broken")
		}
		return in, nil
	}}).Register, []grpc.ServerOption{grpc.ChainUnaryInterceptor(rec.UnaryInterceptor), grpc.ChainStreamInterceptor(rec.StreamInterceptor)})
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if _, err := stubserver.Unary(ctx, conn, "hi"); err != nil {
		t.Fatal(err)
	}
	stubserver.Unary(t.Context(), conn, "fail")
	got := spans.GetSpans()
	if len(got) != 2 {
		t.Fatalf("%d spans, want 2", len(got))
	}
	if s := got[0]; s.Name != "loam.test.v1.Stub/Unary" || s.Parent.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || attr(s, "rpc.response.status_code") != "OK" {
		t.Errorf("first span = %q under %s, code %s; want the method under the caller's trace, OK", s.Name, s.Parent.TraceID(), attr(s, "rpc.response.status_code"))
	}
	if s := got[1]; attr(s, "error.type") != "INTERNAL" || s.Status.Description != "broken" {
		t.Errorf("second span: error.type %q, status %q; want INTERNAL, broken", attr(s, "error.type"), s.Status.Description)
	}
	body := scrape(t, tel)
	for _, want := range []string{`rpc_method="loam.test.v1.Stub/Unary",rpc_response_status_code="OK"`, `rpc_response_status_code="INTERNAL"`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
