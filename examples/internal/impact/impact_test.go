package impact

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/events"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
	"github.com/loamhq/loam/loamtest"
	"github.com/loamhq/loam/service"
)

// start serves the impact service on loopback and returns a client of
// alice's, an anonymous client, and a topic on the server's own bus.
func start(t *testing.T) (alice, anonymous impactv1.ImpactServiceClient, created *events.Topic[*capturesv1.CaptureCreated]) {
	t.Helper()
	iss := loamtest.NewIssuer(t, Audience)
	cfg := LocalConfig(iss.URL())
	var regErr error
	srv := loamtest.StartServer(t, cfg.Config, func(r grpc.ServiceRegistrar) {
		// StartServer hands over the *service.Server it built.
		_, regErr = Register(t.Context(), r.(*service.Server))
	})
	if regErr != nil {
		t.Fatal(regErr)
	}
	created, err := events.NewTopic[*capturesv1.CaptureCreated](t.Context(), srv.Bus())
	if err != nil {
		t.Fatal(err)
	}
	alice = impactv1.NewImpactServiceClient(srv.Client(t, iss.Token(t, "alice", loamtest.Roles("planter"))))
	anonymous = impactv1.NewImpactServiceClient(srv.Client(t, ""))
	return alice, anonymous, created
}

func captured(id, planter, species string) *capturesv1.CaptureCreated {
	return &capturesv1.CaptureCreated{CaptureId: id, PlanterId: planter, Species: species, CaptureTime: timestamppb.New(time.Unix(1_800_000_000, 0))}
}

// waitCaptures polls until the planter's impact shows want captures.
func waitCaptures(t *testing.T, c impactv1.ImpactServiceClient, planter string, want int64) *impactv1.PlanterImpact {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.GetPlanterImpact(t.Context(), &impactv1.GetPlanterImpactRequest{PlanterId: planter})
		if err != nil {
			t.Fatalf("GetPlanterImpact(%s) = %v", planter, err)
		}
		if resp.GetImpact().GetCaptures() == want {
			return resp.GetImpact()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetPlanterImpact(%s) = %d captures after 5s, want %d", planter, resp.GetImpact().GetCaptures(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventsInvalidateCachedImpact(t *testing.T) {
	alice, _, created := start(t)
	// Nothing recorded yet: zero, and now cached.
	waitCaptures(t, alice, "bob", 0)
	if err := created.Publish(t.Context(), captured("cap_1", "bob", "Quercus robur")); err != nil {
		t.Fatal(err)
	}
	waitCaptures(t, alice, "bob", 1)
	for _, ev := range []*capturesv1.CaptureCreated{
		captured("cap_2", "bob", "Fagus sylvatica"),
		captured("cap_2", "bob", "Fagus sylvatica"), // delivered twice, counted once
		captured("cap_3", "carol", "Quercus robur"),
	} {
		if err := created.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	imp := waitCaptures(t, alice, "bob", 2)
	if imp.GetSpecies() != 2 || !imp.GetLastCaptureTime().AsTime().Equal(time.Unix(1_800_000_000, 0)) {
		t.Errorf("bob's impact = %v, want 2 species and the capture time", imp)
	}
	waitCaptures(t, alice, "carol", 1)
	top, err := alice.ListTopPlanters(t.Context(), &impactv1.ListTopPlantersRequest{Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range top.GetPlanters() {
		ids = append(ids, p.GetPlanterId())
	}
	if strings.Join(ids, ",") != "bob,carol" {
		t.Errorf("ListTopPlanters = %v, want bob,carol", ids)
	}
}

func TestRequestsRefused(t *testing.T) {
	alice, anonymous, _ := start(t)
	if _, err := anonymous.GetPlanterImpact(t.Context(), &impactv1.GetPlanterImpactRequest{PlanterId: "bob"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("anonymous GetPlanterImpact = %v, want Unauthenticated", err)
	}
	long := strings.Repeat("p", 129)
	_, err := alice.GetPlanterImpact(t.Context(), &impactv1.GetPlanterImpactRequest{PlanterId: long})
	if status.Code(err) != codes.InvalidArgument || strings.Contains(err.Error(), long) {
		t.Errorf("GetPlanterImpact(129-byte id) = %.200v, want InvalidArgument not echoing the id", err)
	}
	if _, err := alice.GetPlanterImpact(t.Context(), &impactv1.GetPlanterImpactRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetPlanterImpact(no id) = %v, want InvalidArgument", err)
	}
	if _, err := alice.ListTopPlanters(t.Context(), &impactv1.ListTopPlantersRequest{Limit: -1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListTopPlanters(-1) = %v, want InvalidArgument", err)
	}
}

func TestHandleRejectsIncompleteEvent(t *testing.T) {
	s := New(NewAggregate(), nil)
	err := s.Handle(context.Background(), &events.Event[*capturesv1.CaptureCreated]{Data: &capturesv1.CaptureCreated{PlanterId: "bob"}})
	if !events.IsPermanent(err) {
		t.Errorf("Handle(no capture_id) = %v, want a permanent error", err)
	}
}

func TestAggregateConcurrent(t *testing.T) {
	a := NewAggregate()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 100 {
				a.Apply(captured(string(rune('a'+w))+"_"+string(rune('0'+i%10))+string(rune('0'+i/10)), "bob", "Quercus robur"))
				a.Top(3)
			}
		})
	}
	wg.Wait()
	if got := a.Impact("bob").GetCaptures(); got != 400 {
		t.Errorf("captures after 400 distinct events from 4 goroutines = %d, want 400", got)
	}
}
