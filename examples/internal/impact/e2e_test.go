package impact_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

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

	capSrv := loamtest.StartServer(t, capCfg.Config, func(r grpc.ServiceRegistrar) {
		if err := captures.Register(t.Context(), r.(*service.Server)); err != nil {
			t.Fatal(err)
		}
	})
	impSrv := loamtest.StartServer(t, impCfg.Config, func(r grpc.ServiceRegistrar) {
		if _, err := impact.Register(t.Context(), r.(*service.Server)); err != nil {
			t.Fatal(err)
		}
	})

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
