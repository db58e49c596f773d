package impact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/examples/internal/exampletest"
	"github.com/loamhq/loam/examples/internal/pgdb"
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
		_, regErr = Register(t.Context(), r.(*service.Server), NewMemoryStore())
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
	s := New(NewMemoryStore())
	err := s.Handle(context.Background(), &events.Event[*capturesv1.CaptureCreated]{Data: &capturesv1.CaptureCreated{PlanterId: "bob"}})
	if !events.IsPermanent(err) {
		t.Errorf("Handle(no capture_id) = %v, want a permanent error", err)
	}
}

// TestStores holds both stores to one contract: counts, distinct species,
// the latest capture, a capture delivered twice counted once, the ranking
// and its ties, and concurrent writers.
func TestStores(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"memory":   func(*testing.T) Store { return NewMemoryStore() },
		"postgres": postgresStore,
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := open(t)
			later := captured("cap_b2", "bob", "Fagus sylvatica")
			later.CaptureTime = timestamppb.New(time.Unix(1_800_000_100, 0))
			for i, ev := range []*capturesv1.CaptureCreated{
				captured("cap_b1", "bob", "Quercus robur"), later, captured("cap_b1", "bob", "Quercus robur"),
				captured("cap_a1", "Anna", "Quercus robur"), captured("cap_c1", "carol", "Quercus robur"),
			} {
				isNew, err := s.Apply(ctx, ev)
				if err != nil || isNew != (i != 2) {
					t.Fatalf("Apply(#%d %s) = %v, %v; want new=%v", i, ev.GetCaptureId(), isNew, err, i != 2)
				}
			}
			bob, err := s.Impact(ctx, "bob")
			if err != nil || bob.GetCaptures() != 2 || bob.GetSpecies() != 2 || !bob.GetLastCaptureTime().AsTime().Equal(time.Unix(1_800_000_100, 0)) {
				t.Errorf("Impact(bob) = %v, %v; want 2 captures, 2 species, the later time", bob, err)
			}
			nobody, err := s.Impact(ctx, "nobody")
			if err != nil || nobody.GetPlanterId() != "nobody" || nobody.GetCaptures() != 0 || nobody.GetLastCaptureTime() != nil {
				t.Errorf("Impact(nobody) = %v, %v; want zero counts", nobody, err)
			}
			top, err := s.Top(ctx, 2)
			if err != nil || len(top) != 2 || top[0].GetPlanterId() != "bob" || top[1].GetPlanterId() != "Anna" {
				t.Errorf("Top(2) = %v, %v; want bob, then Anna (ties in byte order)", top, err)
			}
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := range 25 {
						if _, err := s.Apply(ctx, captured(fmt.Sprintf("cap_w%d_%d", w, i), "dora", "Quercus robur")); err != nil {
							t.Error(err)
							return
						}
						if _, err := s.Top(ctx, 3); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if got, err := s.Impact(ctx, "dora"); err != nil || got.GetCaptures() != 100 {
				t.Errorf("dora's captures after 100 distinct events from 4 goroutines = %v, %v; want 100", got, err)
			}
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.Apply(cancelled, captured("cap_x", "bob", "x")); !errors.Is(err, context.Canceled) {
				t.Errorf("Apply(cancelled) = %v, want context.Canceled", err)
			}
		})
	}
}

func postgresStore(t *testing.T) Store {
	pool, _, _ := exampletest.PostgresPool(t, "impact")
	s, err := NewPostgresStore(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// failingStore fails every write.
type failingStore struct{ Store }

func (failingStore) Apply(context.Context, *capturesv1.CaptureCreated) (bool, error) {
	return false, errors.New("database down")
}

func TestHandleReturnsStoreFailure(t *testing.T) {
	s := New(failingStore{NewMemoryStore()})
	err := s.Handle(t.Context(), &events.Event[*capturesv1.CaptureCreated]{Data: captured("cap_1", "bob", "x")})
	if err == nil || events.IsPermanent(err) || !strings.Contains(err.Error(), "database down") {
		t.Errorf("Handle with the store down = %v, want a retryable error naming the cause", err)
	}
}

func TestConfigValidate(t *testing.T) {
	base := LocalConfig("http://127.0.0.1:9400")
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"postgres without a database", func(c *Config) { c.Impact.Store = "postgres" }, "impact.database.url: required"},
		{"a database kept in memory", func(c *Config) { c.Impact.Database.URL = "postgres://db/impact" }, "impact.store is memory"},
	} {
		cfg := base
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("LocalConfig().Validate() = %v", err)
	}
}

// downStore answers every read as a database that is gone.
type downStore struct{ Store }

func (downStore) Impact(context.Context, string) (*impactv1.PlanterImpact, error) {
	return nil, pgdb.Unavailable(io.ErrUnexpectedEOF)
}

func (downStore) Top(context.Context, int) ([]*impactv1.PlanterImpact, error) {
	return nil, pgdb.Unavailable(io.ErrUnexpectedEOF)
}

func TestReadsWithTheStoreDown(t *testing.T) {
	s := New(downStore{NewMemoryStore()})
	if _, err := s.GetPlanterImpact(t.Context(), &impactv1.GetPlanterImpactRequest{PlanterId: "bob"}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetPlanterImpact with the store down = %v, want Unavailable", err)
	}
	if _, err := s.ListTopPlanters(t.Context(), &impactv1.ListTopPlantersRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("ListTopPlanters with the store down = %v, want Unavailable", err)
	}
}
