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

// Store keeps captures. Implementations must be safe for concurrent use;
// they own the captures they are given and return copies.
type Store interface {
	// Create stores c, whose id is set and unique, and then runs publish
	// (when not nil) to announce it. A store with transactions runs
	// publish inside the one that stores c, with a context that carries
	// it (pgoutbox.NewContext), and stores nothing if publish fails. A
	// store without them keeps c whatever publish returns, and says so in
	// its error.
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
// publish fails stays stored, and the caller is told so.
func (s *MemoryStore) Create(ctx context.Context, c *capturesv1.Capture, publish func(context.Context) error) error {
	if err := s.put(ctx, c); err != nil {
		return err
	}
	if publish == nil {
		return nil
	}
	if err := publish(ctx); err != nil {
		return fmt.Errorf("capture %s stored, not announced: %w", c.GetId(), err)
	}
	return nil
}

func (s *MemoryStore) put(ctx context.Context, c *capturesv1.Capture) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byID[c.GetId()]; dup {
		return errors.New("duplicate capture id " + c.GetId())
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
