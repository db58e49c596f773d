package captures

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
)

// ErrNotFound is returned by Store.Get for an unknown id.
var ErrNotFound = errors.New("capture not found")

// ErrExists is returned by Store.Create for an id that is already stored;
// nothing is stored and publish does not run.
var ErrExists = errors.New("capture id already stored")

// Store keeps captures. Implementations must be safe for concurrent use;
// they own the captures they are given and return copies.
type Store interface {
	// Create stores c, whose id is set, and then runs publish (when not
	// nil) to announce it; if publish fails, c is not stored. A store with
	// transactions runs publish inside the one that stores c, with a
	// context that carries it (pgoutbox.NewContext). An id already stored
	// is ErrExists, and publish does not run.
	Create(ctx context.Context, c *capturesv1.Capture, publish func(context.Context) error) error
	// Get returns the capture with id, or ErrNotFound.
	Get(ctx context.Context, id string) (*capturesv1.Capture, error)
	// List returns up to limit captures, newest first, of planterID (all
	// planters when empty), starting after the capture with id after (from
	// the newest when empty), and whether more follow.
	List(ctx context.Context, planterID, after string, limit int) (page []*capturesv1.Capture, more bool, err error)
}

// MemoryStore is a Store in memory, for development and the demo.
type MemoryStore struct {
	mu    sync.RWMutex
	byID  map[string]*capturesv1.Capture
	order []string // ids, oldest first
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{byID: map[string]*capturesv1.Capture{}}
}

// Create implements Store. Memory has no transactions: a capture whose
// publish fails is removed again, so that a retry records and announces it
// anew. An event that the broker took before reporting a failure may then
// name a capture that is not stored; only the outbox (PostgresStore) rules
// that out.
func (s *MemoryStore) Create(ctx context.Context, c *capturesv1.Capture, publish func(context.Context) error) error {
	if err := s.put(ctx, c); err != nil {
		return err
	}
	if publish == nil {
		return nil
	}
	if err := publish(ctx); err != nil {
		s.remove(c.GetId())
		return fmt.Errorf("capture %s not stored: %w", c.GetId(), err)
	}
	return nil
}

// remove takes back the capture put last with id.
func (s *MemoryStore) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
	if i := slices.Index(s.order, id); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
}

func (s *MemoryStore) put(ctx context.Context, c *capturesv1.Capture) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byID[c.GetId()]; dup {
		return ErrExists
	}
	s.byID[c.GetId()] = proto.CloneOf(c)
	s.order = append(s.order, c.GetId())
	return nil
}

// Get implements Store.
func (s *MemoryStore) Get(ctx context.Context, id string) (*capturesv1.Capture, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.byID[id]
	if !ok {
		return nil, ErrNotFound
	}
	return proto.CloneOf(c), nil
}

// List implements Store.
func (s *MemoryStore) List(ctx context.Context, planterID, after string, limit int) ([]*capturesv1.Capture, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	start := len(s.order) - 1
	if after != "" {
		i := slices.Index(s.order, after)
		if i < 0 {
			return nil, false, ErrNotFound
		}
		start = i - 1
	}
	var page []*capturesv1.Capture
	for i := start; i >= 0; i-- {
		c := s.byID[s.order[i]]
		if planterID != "" && c.GetPlanterId() != planterID {
			continue
		}
		if len(page) == limit {
			return page, true, nil
		}
		page = append(page, proto.CloneOf(c))
	}
	return page, false, nil
}
