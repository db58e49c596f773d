package events

import (
	"context"
	"hash/maphash"
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
//
// It keeps 128-bit hashes of the keys, not the keys, in memory without
// pointers, so that a large window costs the garbage collector nothing;
// each key takes about 64 bytes. Two keys with the same hash would be
// taken for one, with odds of about one in 10^26 for a million keys.
func NewMemoryDeduper(size int) Deduper {
	size = max(size, 1)
	return &memoryDeduper{
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		index: make(map[dedupKey]int32, min(size, 1<<16)),
		ring:  make([]dedupSlot, size),
		now:   time.Now,
	}
}

type dedupKey [2]uint64

// dedupSlot is one remembered key, in the ring in the order of first write.
type dedupSlot struct {
	key     dedupKey
	expires int64 // Unix nanoseconds
	done    bool
	live    bool // false once released or expired
}

type memoryDeduper struct {
	seeds [2]maphash.Seed
	now   func() time.Time

	mu      sync.Mutex
	index   map[dedupKey]int32 // live key -> ring position
	ring    []dedupSlot
	head, n int // the oldest slot and the number of slots in use
}

func (d *memoryDeduper) hash(key string) dedupKey {
	return dedupKey{maphash.String(d.seeds[0], key), maphash.String(d.seeds[1], key)}
}

func (d *memoryDeduper) Claim(_ context.Context, key string, ttl time.Duration) (DedupState, error) {
	k := d.hash(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now().UnixNano()
	d.expire(now)
	if i, ok := d.index[k]; ok {
		switch sl := &d.ring[i]; {
		case sl.expires <= now:
			d.drop(i)
		case sl.done:
			return DedupDone, nil
		default:
			return DedupInProgress, nil
		}
	}
	d.put(k, false, now+int64(ttl))
	return DedupClaimed, nil
}

func (d *memoryDeduper) Done(_ context.Context, key string, window time.Duration) error {
	k := d.hash(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	expires := d.now().UnixNano() + int64(window)
	if i, ok := d.index[k]; ok { // the claim becomes the record
		d.ring[i].done, d.ring[i].expires = true, expires
		return nil
	}
	d.put(k, true, expires)
	return nil
}

func (d *memoryDeduper) Release(_ context.Context, key string) error {
	k := d.hash(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, ok := d.index[k]; ok && !d.ring[i].done {
		d.drop(i)
	}
	return nil
}

// put appends a slot, evicting the oldest when the ring is full. Callers
// hold mu.
func (d *memoryDeduper) put(k dedupKey, done bool, expires int64) {
	if d.n == len(d.ring) {
		d.pop()
	}
	i := (d.head + d.n) % len(d.ring)
	d.ring[i] = dedupSlot{key: k, expires: expires, done: done, live: true}
	d.index[k] = int32(i)
	d.n++
}

// pop removes the oldest slot.
func (d *memoryDeduper) pop() {
	d.drop(int32(d.head))
	d.head = (d.head + 1) % len(d.ring)
	d.n--
}

// drop forgets the key in slot i, leaving the slot in the ring until it is
// the oldest.
func (d *memoryDeduper) drop(i int32) {
	if sl := &d.ring[i]; sl.live {
		delete(d.index, sl.key)
		sl.live = false
	}
}

// expire pops the expired and released slots at the front. Slots are in
// write order and windows are usually alike, so this stops at the first
// live one; a slot that expires behind a live one is found expired when
// looked up.
func (d *memoryDeduper) expire(now int64) {
	for d.n > 0 {
		if sl := &d.ring[d.head]; sl.live && sl.expires > now {
			return
		}
		d.pop()
	}
}
