// Package impact implements the impact example service: it follows the
// CaptureCreated events of the captures service, counts each planter's
// captures in memory, and answers who has planted what. Answers about one
// planter are cached and dropped from the cache when a new event about
// that planter arrives.
package impact

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
)

// Limits of the requests.
const (
	maxPlanterIDLen = 128
	defaultLimit    = 10
	maxLimit        = 100
)

// Aggregate is every planter's impact, in memory. It is safe for
// concurrent use, and applying the same event twice counts it once.
type Aggregate struct {
	mu       sync.Mutex
	planters map[string]*planter
}

type planter struct {
	captures map[string]bool // capture ids seen
	species  map[string]bool
	last     *timestamppb.Timestamp
}

// NewAggregate returns an empty Aggregate.
func NewAggregate() *Aggregate { return &Aggregate{planters: map[string]*planter{}} }

// Apply counts a capture. It reports whether the capture was new.
func (a *Aggregate) Apply(ev *capturesv1.CaptureCreated) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.planters[ev.GetPlanterId()]
	if p == nil {
		p = &planter{captures: map[string]bool{}, species: map[string]bool{}}
		a.planters[ev.GetPlanterId()] = p
	}
	if p.captures[ev.GetCaptureId()] {
		return false
	}
	p.captures[ev.GetCaptureId()] = true
	p.species[ev.GetSpecies()] = true
	if t := ev.GetCaptureTime(); t != nil && (p.last == nil || t.AsTime().After(p.last.AsTime())) {
		p.last = t
	}
	return true
}

// Impact returns one planter's impact; zero counts for a planter not seen.
func (a *Aggregate) Impact(planterID string) *impactv1.PlanterImpact {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.impact(planterID)
}

func (a *Aggregate) impact(id string) *impactv1.PlanterImpact {
	out := &impactv1.PlanterImpact{PlanterId: id}
	if p := a.planters[id]; p != nil {
		out.Captures = int64(len(p.captures))
		out.Species = int64(len(p.species))
		out.LastCaptureTime = p.last
	}
	return out
}

// Top returns the n planters with the most captures, most first; ties in
// planter id order.
func (a *Aggregate) Top(n int) []*impactv1.PlanterImpact {
	a.mu.Lock()
	defer a.mu.Unlock()
	all := make([]*impactv1.PlanterImpact, 0, len(a.planters))
	for id := range a.planters {
		all = append(all, a.impact(id))
	}
	slices.SortFunc(all, func(x, y *impactv1.PlanterImpact) int {
		if c := cmp.Compare(y.GetCaptures(), x.GetCaptures()); c != 0 {
			return c
		}
		return cmp.Compare(x.GetPlanterId(), y.GetPlanterId())
	})
	return all[:min(n, len(all))]
}

// Service implements impact.v1.ImpactService over an Aggregate.
type Service struct {
	impactv1.UnimplementedImpactServiceServer
	agg       *Aggregate
	byPlanter *cache.Cache[string, *impactv1.PlanterImpact]
}

// New returns a Service answering from agg, caching answers about one
// planter in byPlanter when it is not nil.
func New(agg *Aggregate, byPlanter *cache.Cache[string, *impactv1.PlanterImpact]) *Service {
	return &Service{agg: agg, byPlanter: byPlanter}
}

// GetPlanterImpact returns one planter's impact.
func (s *Service) GetPlanterImpact(ctx context.Context, req *impactv1.GetPlanterImpactRequest) (*impactv1.GetPlanterImpactResponse, error) {
	id := req.GetPlanterId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "planter_id: required")
	case len(id) > maxPlanterIDLen:
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("planter_id: longer than %d bytes", maxPlanterIDLen))
	}
	if s.byPlanter == nil {
		return &impactv1.GetPlanterImpactResponse{Impact: s.agg.Impact(id)}, nil
	}
	imp, err := s.byPlanter.GetOrLoad(ctx, id, func(_ context.Context, id string) (*impactv1.PlanterImpact, error) {
		return s.agg.Impact(id), nil
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, status.FromContextError(err).Err()
		}
		return nil, err
	}
	return &impactv1.GetPlanterImpactResponse{Impact: imp}, nil
}

// ListTopPlanters lists the planters with the most captures. It reads the
// aggregate directly: the ranking changes with every event.
func (s *Service) ListTopPlanters(_ context.Context, req *impactv1.ListTopPlantersRequest) (*impactv1.ListTopPlantersResponse, error) {
	n := int(req.GetLimit())
	switch {
	case n < 0:
		return nil, status.Error(codes.InvalidArgument, "limit: must not be negative")
	case n == 0:
		n = defaultLimit
	case n > maxLimit:
		n = maxLimit
	}
	return &impactv1.ListTopPlantersResponse{Planters: s.agg.Top(n)}, nil
}

// Handle applies a CaptureCreated event, then drops the planter's cached
// answer so that the next read sees the event. A failed invalidation is
// returned, so the bus redelivers the event; applying it again is harmless.
func (s *Service) Handle(ctx context.Context, e *events.Event[*capturesv1.CaptureCreated]) error {
	if e.Data.GetPlanterId() == "" || e.Data.GetCaptureId() == "" {
		return events.Permanent(errors.New("CaptureCreated without planter_id or capture_id"))
	}
	s.agg.Apply(e.Data)
	if s.byPlanter != nil {
		if err := s.byPlanter.Delete(ctx, e.Data.GetPlanterId()); err != nil {
			return fmt.Errorf("invalidating the impact of planter: %w", err)
		}
	}
	return nil
}

// Subscribe makes svc follow the CaptureCreated events on bus, under the
// subscription name "impact".
func Subscribe(ctx context.Context, bus *events.Bus, svc *Service) (*events.Subscription, error) {
	topic, err := events.NewTopic[*capturesv1.CaptureCreated](ctx, bus)
	if err != nil {
		return nil, fmt.Errorf("impact: CaptureCreated topic: %w", err)
	}
	sub, err := topic.Subscribe(ctx, "impact", svc.Handle)
	if err != nil {
		return nil, fmt.Errorf("impact: subscribing to CaptureCreated: %w", err)
	}
	return sub, nil
}
