package events

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// DedupState is what a Deduper knows of an event ID.
type DedupState int

const (
	// DedupClaimed: nobody has processed the ID; the caller now holds the
	// claim and processes it.
	DedupClaimed DedupState = iota
	// DedupInProgress: another delivery holds a claim on the ID and has not
	// finished.
	DedupInProgress
	// DedupDone: the ID was processed within the window.
	DedupDone
)

// Deduper remembers which events each subscription has processed, so that
// an event delivered more than once (a broker redelivery after a lost
// acknowledgement, or a producer that published an ID twice) is handled
// once. Keys combine the subscription, the topic and the event ID.
//
// A Deduper over a shared store (such as Redis: SET key claimed NX PX ttl
// for Claim, SET key done PX window for Done, DEL for Release) makes
// deduplication hold across replicas and restarts; the in-memory one
// (NewMemoryDeduper) holds within one process. Implementations must be safe
// for concurrent use. An error from any method makes the subscription
// process the event anyway: at-least-once delivery comes first.
type Deduper interface {
	// Claim reports the state of key and, when it is DedupClaimed, records
	// a claim that lasts ttl unless Done or Release comes first.
	Claim(ctx context.Context, key string, ttl time.Duration) (DedupState, error)
	// Done records key as processed, for window.
	Done(ctx context.Context, key string, window time.Duration) error
	// Release drops the claim on key, so that a later delivery may claim it.
	Release(ctx context.Context, key string) error
}

// DefaultMemoryDedupSize is how many keys the default Deduper of a Bus
// remembers.
const DefaultMemoryDedupSize = 100_000

// NewMemoryDeduper returns a Deduper that remembers up to size keys in
// process memory, forgetting the oldest first when full and each one when
// its window or claim expires. It is safe for concurrent use.
func NewMemoryDeduper(size int) Deduper {
	if size < 1 {
		size = 1
	}
	return &memoryDeduper{size: size, entries: map[string]*list.Element{}, order: list.New(), now: time.Now}
}

type memoryDeduper struct {
	size int
	now  func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // of *dedupEntry
	order   *list.List               // oldest write first
}

type dedupEntry struct {
	key     string
	done    bool
	expires time.Time
}

func (d *memoryDeduper) Claim(_ context.Context, key string, ttl time.Duration) (DedupState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.expire(now)
	if el, ok := d.entries[key]; ok {
		switch e := el.Value.(*dedupEntry); {
		case !now.Before(e.expires):
			d.remove(key)
		case e.done:
			return DedupDone, nil
		default:
			return DedupInProgress, nil
		}
	}
	d.put(key, false, now.Add(ttl))
	return DedupClaimed, nil
}

func (d *memoryDeduper) Done(_ context.Context, key string, window time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.remove(key)
	d.put(key, true, d.now().Add(window))
	return nil
}

func (d *memoryDeduper) Release(_ context.Context, key string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.entries[key]; ok && !el.Value.(*dedupEntry).done {
		d.remove(key)
	}
	return nil
}

// put appends an entry, evicting the oldest when full. Callers hold mu.
func (d *memoryDeduper) put(key string, done bool, expires time.Time) {
	for d.order.Len() >= d.size {
		d.remove(d.order.Front().Value.(*dedupEntry).key)
	}
	d.entries[key] = d.order.PushBack(&dedupEntry{key: key, done: done, expires: expires})
}

func (d *memoryDeduper) remove(key string) {
	if el, ok := d.entries[key]; ok {
		d.order.Remove(el)
		delete(d.entries, key)
	}
}

// expire drops expired entries from the front. Entries are in write order,
// and windows are usually alike, so this stops at the first live one; an
// entry with a longer window behind a shorter one is dropped when it
// reaches the front.
func (d *memoryDeduper) expire(now time.Time) {
	for el := d.order.Front(); el != nil; el = d.order.Front() {
		e := el.Value.(*dedupEntry)
		if now.Before(e.expires) {
			return
		}
		d.remove(e.key)
	}
}
