package impact_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/examples/internal/captures"
	"github.com/loamhq/loam/examples/internal/impact"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
	"github.com/loamhq/loam/internal/testenv"
	"github.com/loamhq/loam/loamtest"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// load reads a configuration written to a directory of its own, as a
// deployment would, so that every default applies.
func load[T any](t *testing.T, yaml string) T {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load[T](t.Context(), config.WithDir(dir), config.WithEnvironment("test"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestEndToEndOnRealInfrastructure runs captures and impact as two
// servers that share only PostgreSQL, NATS JetStream and Redis: captures
// stores in Postgres and publishes through the outbox, impact counts in
// Postgres. A capture created on one is counted by the other, in one
// trace; a capture created while NATS is cut off from captures is counted
// once NATS is back; reads go on when Redis is cut off.
func TestEndToEndOnRealInfrastructure(t *testing.T) {
	natsURL := testenv.NATS.URL(t)
	natsProxy := testenv.NewProxy(t, testenv.NATS.HostPort(t))
	redis := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	redisAddr := redis.Addr()
	capSchema, capDB := testenv.PostgresSchema(t, "loam_e2e_captures")
	_, impDB := testenv.PostgresSchema(t, "loam_e2e_impact")
	iss, err := loamtest.StartIssuer(captures.Audience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	run := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	sections := fmt.Sprintf(`
cache:
  namespace: %s
  redis:
    addresses: [%s]
authn:
  issuers:
    - url: %s
      audiences: [%%s]
`, run, redisAddr, iss.URL())

	// captures reaches NATS through a proxy the test cuts; its outbox
	// relay retries quickly.
	capCfg := load[captures.Config](t, "service:\n  name: captures\n"+fmt.Sprintf(sections, captures.Audience)+fmt.Sprintf(`
authz:
  handler_permissions: [captures.read_all]
  roles:
    planter: [captures.create, captures.read]
captures:
  store: postgres
events:
  driver: nats
  nats:
    url: nats://%s
    reconnect_wait: 100ms
    publish_timeout: 1s
  outbox:
    enabled: true
    url: %s
    schema: %s
    relay:
      poll_interval: 100ms
      lock_interval: 200ms
      timeout: 2s
      initial_backoff: 20ms
      max_backoff: 300ms
`, natsProxy.Addr(), capDB, capSchema))
	impCfg := load[impact.Config](t, "service:\n  name: impact\n"+fmt.Sprintf(sections, impact.Audience)+fmt.Sprintf(`
authz:
  roles:
    admin: [impact.read]
impact:
  store: postgres
  database:
    url: %s
events:
  driver: nats
  nats:
    url: %s
`, impDB, natsURL))

	// Both servers record their spans in one exporter, to follow the trace
	// from the RPC through the event to the consumer.
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithSpanExporter(spans), telemetry.WithLogOutput(t.Output()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	capSrv := loamtest.StartServer(t, capCfg.Config, func(r grpc.ServiceRegistrar) {
		srv := r.(*service.Server)
		store, err := captures.OpenStore(t.Context(), srv, capCfg)
		if err == nil {
			err = captures.Register(t.Context(), srv, store)
		}
		if err != nil {
			t.Fatal(err)
		}
	}, service.WithTelemetry(tel))
	impSrv := loamtest.StartServer(t, impCfg.Config, func(r grpc.ServiceRegistrar) {
		srv := r.(*service.Server)
		store, err := impact.OpenStore(t.Context(), srv, impCfg.Impact)
		if err == nil {
			_, err = impact.Register(t.Context(), srv, store)
		}
		if err != nil {
			t.Fatal(err)
		}
	}, service.WithTelemetry(tel))

	planter := "planter-" + run
	capClient := capturesv1.NewCaptureServiceClient(capSrv.Client(t, iss.Token(t, planter, loamtest.Roles("planter"))))
	impClient := impactv1.NewImpactServiceClient(impSrv.Client(t, iss.Token(t, "carol", loamtest.Roles("admin"), loamtest.ForAudience(impact.Audience))))

	capture := func(ctx context.Context) (*capturesv1.CreateCaptureResponse, error) {
		return capClient.CreateCapture(ctx, &capturesv1.CreateCaptureRequest{
			PlanterId: planter, Species: "Quercus robur",
			Location:    &capturesv1.Location{Latitude: 52.37, Longitude: 4.89},
			PhotoUrl:    "https://photos.example.org/q.jpg",
			CaptureTime: timestamppb.New(time.Now().Add(-time.Hour)),
		})
	}
	counted := func(ctx context.Context) int64 {
		resp, err := impClient.GetPlanterImpact(ctx, &impactv1.GetPlanterImpactRequest{PlanterId: planter})
		if err != nil {
			t.Fatalf("GetPlanterImpact = %v", err)
		}
		return resp.GetImpact().GetCaptures()
	}
	waitCounted := func(want int64, within time.Duration) {
		ctx, cancel := context.WithTimeout(t.Context(), within)
		defer cancel()
		for counted(ctx) != want {
			select {
			case <-ctx.Done():
				t.Fatalf("impact counts %d captures of the planter after %v, want %d", counted(t.Context()), within, want)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	created, err := capture(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitCounted(1, 10*time.Second)
	ctx := t.Context()

	// One trace: the CreateCapture call on captures, and impact's handling
	// of the event it published.
	// The consumer's span ends after its handler, so wait for it. Events
	// of earlier runs on the shared NATS may be consumed too: look for the
	// consumer span in the RPC's trace.
	var rpc, consumer trace.TraceID
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, sp := range spans.GetSpans() {
			switch {
			case sp.SpanKind == trace.SpanKindServer && strings.HasSuffix(sp.Name, "CreateCapture"):
				rpc = sp.SpanContext.TraceID()
			case sp.SpanKind == trace.SpanKindConsumer && (!consumer.IsValid() || sp.SpanContext.TraceID() == rpc):
				consumer = sp.SpanContext.TraceID()
			}
		}
		if rpc.IsValid() && consumer == rpc {
			break
		}
	}
	t.Logf("trace of CreateCapture %s, of the consumer %s", rpc, consumer)
	if !rpc.IsValid() || rpc != consumer {
		t.Errorf("CreateCapture's trace %s, the consumer's trace %s: want one valid trace", rpc, consumer)
	}

	// NATS cut off from captures: the capture commits with its event in
	// the outbox, which holds the event until NATS is back.
	natsProxy.Cut()
	if _, err := capture(ctx); err != nil {
		t.Fatalf("CreateCapture with NATS cut off = %v, want it stored through the outbox", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := counted(ctx); n != 1 {
		t.Errorf("impact counts %d captures while NATS is cut off from captures, want 1: the event cannot have left", n)
	}
	natsProxy.Restore()
	waitCounted(2, 15*time.Second)

	// Redis cut off: both services answer from their process and their
	// stores.
	redis.Cut()
	for range 3 {
		if _, err := capClient.GetCapture(ctx, &capturesv1.GetCaptureRequest{Id: created.GetCapture().GetId()}); err != nil {
			t.Errorf("GetCapture with Redis cut off = %v", err)
		}
		resp, err := impClient.GetPlanterImpact(ctx, &impactv1.GetPlanterImpactRequest{PlanterId: planter})
		if err != nil || resp.GetImpact().GetCaptures() != 2 {
			t.Errorf("GetPlanterImpact with Redis cut off = %v, %v; want 2 captures", resp, err)
		}
	}
}
