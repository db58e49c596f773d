package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// BenchmarkUnary measures unary RPCs over loopback against a bare
// grpc.NewServer, Loam's service at three sampling ratios, and otelgrpc's
// server stats handler on the same tracer and meter providers. Every
// instrumented variant exports sampled spans through a batch processor and
// records RPC metrics into a Prometheus exposition; the client is a bare
// grpc client in every case. BENCHMARKS.md has the method and the results.
func BenchmarkUnary(b *testing.B) {
	variants := []struct {
		name  string
		ratio float64
		noop  bool // telemetry with nothing configured
		serve func(b *testing.B, tel *telemetry.Telemetry, ln net.Listener)
	}{
		{name: "bare", serve: serveBare},
		{name: "empty-stats-handler", serve: serveEmptyStats},
		{name: "loam-noop", noop: true, serve: serveLoam},
		{name: "loam-0%", ratio: 0, serve: serveLoam},
		{name: "loam-1%", ratio: 0.01, serve: serveLoam},
		{name: "loam-100%", ratio: 1, serve: serveLoam},
		{name: "otelgrpc-1%", ratio: 0.01, serve: serveOtelgrpc},
		{name: "otelgrpc-100%", ratio: 1, serve: serveOtelgrpc},
	}
	for _, conc := range []int{1, 64} {
		for _, v := range variants {
			b.Run(fmt.Sprintf("c=%d/%s", conc, v.name), func(b *testing.B) {
				cfg := telemetry.Config{
					Traces:        telemetry.Export{Exporter: telemetry.ExporterStdout},
					SamplingRatio: &v.ratio,
					Prometheus:    true,
				}
				if v.noop {
					cfg = telemetry.Config{}
				}
				tel, err := telemetry.New(context.Background(), cfg, telemetry.WithStdout(io.Discard), telemetry.WithLogOutput(io.Discard))
				if err != nil {
					b.Fatal(err)
				}
				defer tel.Shutdown(context.Background())
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				v.serve(b, tel, ln)
				conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				runUnary(b, conn, conc)
				b.StopTimer()
				if v.name != "bare" && v.name != "empty-stats-handler" && !v.noop {
					// Prove the metrics were recorded and are exposed.
					rec := httptest.NewRecorder()
					tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
					if rec.Code != 200 || rec.Body.Len() == 0 {
						b.Fatalf("/metrics = %d", rec.Code)
					}
				}
			})
		}
	}
}

func runUnary(b *testing.B, conn *grpc.ClientConn, conc int) {
	in := wrapperspb.String("ping")
	call := func() {
		out := new(wrapperspb.StringValue)
		if err := conn.Invoke(context.Background(), stubserver.UnaryMethod, in, out); err != nil {
			b.Error(err)
		}
	}
	call() // connect before timing
	b.ReportAllocs()
	b.ResetTimer()
	if conc == 1 {
		for b.Loop() {
			call()
		}
		return
	}
	b.SetParallelism((conc + 1) / 2) // RunParallel starts parallelism*GOMAXPROCS goroutines
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			call()
		}
	})
}

func stub() *stubserver.Stub { return &stubserver.Stub{Unary: echo} }

func serveBare(b *testing.B, _ *telemetry.Telemetry, ln net.Listener) {
	srv := grpc.NewServer()
	stub().Register(srv)
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
}

// serveEmptyStats serves with a stats handler that does nothing: the cost
// of grpc-go's own stats plumbing, which any stats handler pays.
func serveEmptyStats(b *testing.B, _ *telemetry.Telemetry, ln net.Listener) {
	srv := grpc.NewServer(grpc.StatsHandler(emptyStatsHandler{}))
	stub().Register(srv)
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
}

type emptyStatsHandler struct{}

func (emptyStatsHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (emptyStatsHandler) HandleRPC(context.Context, stats.RPCStats)                       {}
func (emptyStatsHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (emptyStatsHandler) HandleConn(context.Context, stats.ConnStats) {}

func serveOtelgrpc(b *testing.B, tel *telemetry.Telemetry, ln net.Listener) {
	srv := grpc.NewServer(grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tel.TracerProvider()),
		otelgrpc.WithMeterProvider(tel.MeterProvider()),
		otelgrpc.WithPropagators(tel.Propagator()),
	)))
	stub().Register(srv)
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
}

func serveLoam(b *testing.B, tel *telemetry.Telemetry, ln net.Listener) {
	cfg := testConfig()
	cfg.Service.AdminAddr = ""
	srv, err := service.New(context.Background(), cfg, service.WithTelemetry(tel), service.WithListener(ln), service.WithoutSignals())
	if err != nil {
		b.Fatal(err)
	}
	stub().Register(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	b.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-done
	})
}
