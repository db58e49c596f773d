// Package impact implements the impact example service: it follows the
// CaptureCreated events of the captures service, counts each planter's
// captures (in memory, or in PostgreSQL), and answers who has planted
// what. Answers are cached and dropped from the cache when an event
// changes them.
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
	"github.com/loamhq/loam/examples/internal/pgdb"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
)

// Limits of the requests.
const (
	maxPlanterIDLen = 128
	defaultLimit    = 10
	maxLimit        = 100
)

// Store keeps every planter's impact. Implementations must be safe for
// concurrent use, and count a capture applied twice once: the bus
// delivers an event at least once.
type Store interface {
	// Apply counts a capture and reports whether it was new.
	Apply(ctx context.Context, ev *capturesv1.CaptureCreated) (bool, error)
	// Impact returns one planter's impact; zero counts for a planter not
	// seen.
	Impact(ctx context.Context, planterID string) (*impactv1.PlanterImpact, error)
	// Top returns the n planters with the most captures, most first; ties
	// in planter id order.
	Top(ctx context.Context, n int) ([]*impactv1.PlanterImpact, error)
}

// MemoryStore is a Store in memory, for development and the demo.
type MemoryStore struct {
	mu       sync.Mutex
	planters map[string]*planter
}

type planter struct {
	captures map[string]bool // capture ids seen
	species  map[string]bool
	last     *timestamppb.Timestamp
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{planters: map[string]*planter{}} }

// Apply implements Store.
func (a *MemoryStore) Apply(ctx context.Context, ev *capturesv1.CaptureCreated) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.planters[ev.GetPlanterId()]
	if p == nil {
		p = &planter{captures: map[string]bool{}, species: map[string]bool{}}
		a.planters[ev.GetPlanterId()] = p
	}
	if p.captures[ev.GetCaptureId()] {
		return false, nil
	}
	p.captures[ev.GetCaptureId()] = true
	p.species[ev.GetSpecies()] = true
	if t := ev.GetCaptureTime(); t != nil && (p.last == nil || t.AsTime().After(p.last.AsTime())) {
		p.last = t
	}
	return true, nil
}

// Impact implements Store.
func (a *MemoryStore) Impact(ctx context.Context, planterID string) (*impactv1.PlanterImpact, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.impact(planterID), nil
}

func (a *MemoryStore) impact(id string) *impactv1.PlanterImpact {
	out := &impactv1.PlanterImpact{PlanterId: id}
	if p := a.planters[id]; p != nil {
		out.Captures = int64(len(p.captures))
		out.Species = int64(len(p.species))
		out.LastCaptureTime = p.last
	}
	return out
}

// Top implements Store.
func (a *MemoryStore) Top(ctx context.Context, n int) ([]*impactv1.PlanterImpact, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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
	return all[:min(n, len(all))], nil
}

// Service implements impact.v1.ImpactService over a Store.
type Service struct {
	impactv1.UnimplementedImpactServiceServer
	store     Store
	byPlanter *cache.Cache[string, *impactv1.PlanterImpact]
	top       *cache.Cache[string, *impactv1.ListTopPlantersResponse]
}

// Option configures a Service.
type Option func(*Service)

// WithCaches makes the Service answer through caches: byPlanter holds one
// planter's impact, keyed by planter id; top holds the ranking (its
// maxLimit first planters, under one key). Handle drops the entries an
// event changes.
func WithCaches(byPlanter *cache.Cache[string, *impactv1.PlanterImpact], top *cache.Cache[string, *impactv1.ListTopPlantersResponse]) Option {
	return func(s *Service) { s.byPlanter, s.top = byPlanter, top }
}

// New returns a Service answering from store.
func New(store Store, opts ...Option) *Service {
	s := &Service{store: store}
	for _, o := range opts {
		o(s)
	}
	return s
}

// topKey is the one key of the ranking in its cache.
const topKey = "top"

// GetPlanterImpact returns one planter's impact.
func (s *Service) GetPlanterImpact(ctx context.Context, req *impactv1.GetPlanterImpactRequest) (*impactv1.GetPlanterImpactResponse, error) {
	id := req.GetPlanterId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "planter_id: required")
	case len(id) > maxPlanterIDLen:
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("planter_id: longer than %d bytes", maxPlanterIDLen))
	}
	var imp *impactv1.PlanterImpact
	var err error
	if s.byPlanter == nil {
		imp, err = s.store.Impact(ctx, id)
	} else {
		imp, err = s.byPlanter.GetOrLoad(ctx, id, s.store.Impact)
	}
	if err != nil {
		return nil, readError(err)
	}
	return &impactv1.GetPlanterImpactResponse{Impact: imp}, nil
}

// ListTopPlanters lists the planters with the most captures.
func (s *Service) ListTopPlanters(ctx context.Context, req *impactv1.ListTopPlantersRequest) (*impactv1.ListTopPlantersResponse, error) {
	n := int(req.GetLimit())
	switch {
	case n < 0:
		return nil, status.Error(codes.InvalidArgument, "limit: must not be negative")
	case n == 0:
		n = defaultLimit
	case n > maxLimit:
		n = maxLimit
	}
	if s.top == nil {
		top, err := s.store.Top(ctx, n)
		if err != nil {
			return nil, readError(err)
		}
		return &impactv1.ListTopPlantersResponse{Planters: top}, nil
	}
	// One cached ranking serves every limit.
	all, err := s.top.GetOrLoad(ctx, topKey, func(ctx context.Context, _ string) (*impactv1.ListTopPlantersResponse, error) {
		top, err := s.store.Top(ctx, maxLimit)
		return &impactv1.ListTopPlantersResponse{Planters: top}, err
	})
	if err != nil {
		return nil, readError(err)
	}
	return &impactv1.ListTopPlantersResponse{Planters: all.GetPlanters()[:min(n, len(all.GetPlanters()))]}, nil
}

// readError maps a store error to the status the client sees.
func readError(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, pgdb.ErrUnavailable):
		return status.Error(codes.Unavailable, "impact storage unavailable; try again")
	}
	return err // logged and hidden by the service's recovery layer
}

// Handle applies a CaptureCreated event, then drops the cached answers it
// changes (the planter's impact and the ranking) so that the next read
// sees it. A failed write or invalidation is returned, so the bus
// redelivers the event; applying it again is harmless. The answers are
// dropped for a capture already counted too: its first delivery may have
// counted it and then failed to drop them.
func (s *Service) Handle(ctx context.Context, e *events.Event[*capturesv1.CaptureCreated]) error {
	if e.Data.GetPlanterId() == "" || e.Data.GetCaptureId() == "" {
		return events.Permanent(errors.New("CaptureCreated without planter_id or capture_id"))
	}
	if _, err := s.store.Apply(ctx, e.Data); err != nil {
		return fmt.Errorf("counting capture: %w", err)
	}
	if s.byPlanter != nil {
		if err := s.byPlanter.Delete(ctx, e.Data.GetPlanterId()); err != nil {
			return fmt.Errorf("invalidating the impact of planter: %w", err)
		}
	}
	if s.top != nil {
		if err := s.top.Delete(ctx, topKey); err != nil {
			return fmt.Errorf("invalidating the ranking: %w", err)
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
