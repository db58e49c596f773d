package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/loamhq/loam/cache/internal/redistier"
)

// ClaimState is what Claims knows of a key.
type ClaimState int

const (
	// ClaimAcquired: nobody held or finished the key; the caller now holds
	// the claim.
	ClaimAcquired ClaimState = iota
	// ClaimHeld: another claim on the key is live and not done.
	ClaimHeld
	// ClaimDone: the key was marked done within its window.
	ClaimDone
)

// String returns "acquired", "held" or "done".
func (s ClaimState) String() string {
	switch s {
	case ClaimAcquired:
		return "acquired"
	case ClaimHeld:
		return "held"
	case ClaimDone:
		return "done"
	}
	return fmt.Sprintf("ClaimState(%d)", int(s))
}

// Claims is a set of keys in Redis that the processes of a namespace
// claim before doing a piece of work and mark done after it, so that work
// that reaches several processes (an event redelivered to another replica,
// a job queued twice) takes effect once. The service package uses one for
// the consumer-side deduplication of events when events.dedup.store is
// redis.
//
// Claims share the Store's Redis client and circuit breaker, but not its
// cache entries: keys are loam.claims:namespace:name:key, outside the
// namespace that the caches flush after an outage. While Redis is
// unavailable every call fails fast with an error wrapping ErrUnavailable;
// the caller decides whether to do the work anyway (events does:
// at-least-once comes first). A Claims is safe for concurrent use.
type Claims struct {
	s      *Store
	prefix string
	owner  string // marks this Claims's own claims, so Release drops no other
}

// Claim scripts: one round trip each, atomic in Redis.
var (
	claimScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'acquired'`)
	releaseScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 'ok'`)
)

const claimDone = "done"

// Claims returns the claims called name, such as "events". It fails with
// ErrInvalidConfig when the Store has no Redis (cache.redis.addresses is
// empty): claims in one process's memory would deduplicate nothing across
// processes.
func (s *Store) Claims(name string) (*Claims, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if name == "" {
		return nil, fmt.Errorf("%w: claims need a name", ErrInvalidConfig)
	}
	if s.tier == nil {
		return nil, fmt.Errorf("%w: claims %q need Redis, and cache.redis.addresses is empty", ErrInvalidConfig, name)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &Claims{s: s, prefix: "loam.claims:" + s.prefix + name + ":", owner: "claimed:" + hex.EncodeToString(id[:])}, nil
}

// Claim reports the state of key and, when it is ClaimAcquired, records a
// claim that lasts ttl unless Done or Release comes first.
func (c *Claims) Claim(ctx context.Context, key string, ttl time.Duration) (ClaimState, error) {
	if err := c.usable(); err != nil {
		return 0, err
	}
	v, err := c.s.tier.Eval(ctx, claimScript, []string{c.prefix + key}, []string{c.owner, millis(ttl)})
	if err != nil {
		return 0, c.wrap("claim", err)
	}
	switch v {
	case "acquired":
		return ClaimAcquired, nil
	case claimDone:
		return ClaimDone, nil
	}
	return ClaimHeld, nil
}

// Done records key as done for window, whoever held the claim.
func (c *Claims) Done(ctx context.Context, key string, window time.Duration) error {
	if err := c.usable(); err != nil {
		return err
	}
	return c.wrap("done", c.s.tier.Set(ctx, c.prefix+key, []byte(claimDone), window, false))
}

// Release drops this Claims's claim on key, so that a later call may claim
// it. A claim of another process, or a key marked done, stays.
func (c *Claims) Release(ctx context.Context, key string) error {
	if err := c.usable(); err != nil {
		return err
	}
	_, err := c.s.tier.Eval(ctx, releaseScript, []string{c.prefix + key}, []string{c.owner})
	return c.wrap("release", err)
}

func (c *Claims) usable() error {
	if c.s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// wrap names the operation and maps the tier's unavailability to
// ErrUnavailable; a context's error comes back unwrapped.
func (c *Claims) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, redistier.ErrUnavailable):
		return fmt.Errorf("cache: claims %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("cache: claims %s: %w", op, err)
}

func millis(d time.Duration) string {
	return fmt.Sprint(max(d.Milliseconds(), 1))
}
