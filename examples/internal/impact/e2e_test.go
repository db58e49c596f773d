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

// TestEndToEndOnNATSAndRedis runs captures and impact as two servers that
// share only NATS JetStream and Redis: a capture created on one is counted
// by the other, and reads go on when Redis is cut off.
func TestEndToEndOnNATSAndRedis(t *testing.T) {
	natsURL := testenv.NATS.URL(t)
	redis := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	redisAddr := redis.Addr()
	iss, err := loamtest.StartIssuer(captures.Audience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	run := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	sections := fmt.Sprintf(`
events:
  driver: nats
  nats:
    url: %s
cache:
  namespace: %s
  redis:
    addresses: [%s]
authn:
  issuers:
    - url: %s
      audiences: [%%s]
`, natsURL, run, redisAddr, iss.URL())

	capCfg := load[captures.Config](t, "service:\n  name: captures\n"+fmt.Sprintf(sections, captures.Audience)+"authz:\n  handler_permissions: [captures.read_all]\n  roles:\n    planter: [captures.create, captures.read]\n")
	impCfg := load[impact.Config](t, "service:\n  name: impact\n"+fmt.Sprintf(sections, impact.Audience)+"authz:\n  roles:\n    admin: [impact.read]\n")

	// Both servers record their spans in one exporter, to follow the trace
	// from the RPC through the event to the consumer.
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithSpanExporter(spans), telemetry.WithLogOutput(t.Output()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	capSrv := loamtest.StartServer(t, capCfg.Config, func(r grpc.ServiceRegistrar) {
		if err := captures.Register(t.Context(), r.(*service.Server)); err != nil {
			t.Fatal(err)
		}
	}, service.WithTelemetry(tel))
	impSrv := loamtest.StartServer(t, impCfg.Config, func(r grpc.ServiceRegistrar) {
		if _, err := impact.Register(t.Context(), r.(*service.Server)); err != nil {
			t.Fatal(err)
		}
	}, service.WithTelemetry(tel))

	planter := "planter-" + run
	capClient := capturesv1.NewCaptureServiceClient(capSrv.Client(t, iss.Token(t, planter, loamtest.Roles("planter"))))
	impClient := impactv1.NewImpactServiceClient(impSrv.Client(t, iss.Token(t, "carol", loamtest.Roles("admin"), loamtest.ForAudience(impact.Audience))))

	created, err := capClient.CreateCapture(t.Context(), &capturesv1.CreateCaptureRequest{
		PlanterId: planter, Species: "Quercus robur",
		Location:    &capturesv1.Location{Latitude: 52.37, Longitude: 4.89},
		PhotoUrl:    "https://photos.example.org/q.jpg",
		CaptureTime: timestamppb.New(time.Now().Add(-time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		resp, err := impClient.GetPlanterImpact(ctx, &impactv1.GetPlanterImpactRequest{PlanterId: planter})
		if err != nil {
			t.Fatalf("GetPlanterImpact = %v (no event within 10s?)", err)
		}
		if resp.GetImpact().GetCaptures() == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

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

	// Redis cut off: both services answer from their process and their
	// stores.
	redis.Cut()
	for range 3 {
		if _, err := capClient.GetCapture(ctx, &capturesv1.GetCaptureRequest{Id: created.GetCapture().GetId()}); err != nil {
			t.Errorf("GetCapture with Redis cut off = %v", err)
		}
		resp, err := impClient.GetPlanterImpact(ctx, &impactv1.GetPlanterImpactRequest{PlanterId: planter})
		if err != nil || resp.GetImpact().GetCaptures() != 1 {
			t.Errorf("GetPlanterImpact with Redis cut off = %v, %v; want 1 capture", resp, err)
		}
	}
}
