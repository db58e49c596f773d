package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/internal/testenv"
)

func mustClaims(t *testing.T, s *cache.Store, ns, name string) *cache.Claims {
	t.Helper()
	c, err := s.Claims(name)
	if err != nil {
		t.Fatalf("Claims(%q) = %v", name, err)
	}
	t.Cleanup(func() {
		// Claims live outside the namespace the caches use.
		client := testenv.RedisClient(t)
		ctx := context.Background()
		keys, _ := client.Do(ctx, client.B().Keys().Pattern("loam.claims:"+ns+":*").Build()).AsStrSlice()
		for _, k := range keys {
			client.Do(ctx, client.B().Del().Key(k).Build())
		}
	})
	return c
}

// TestClaims checks the life of a key: claimed by one process, held for
// the others, released, claimed again, done for everyone.
func TestClaims(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	replicaA, replicaB := redisStore(t, cfg), redisStore(t, cfg)
	a, b := mustClaims(t, replicaA, cfg.Namespace, "events"), mustClaims(t, replicaB, cfg.Namespace, "events")

	step := func(name string, c *cache.Claims, want cache.ClaimState) {
		t.Helper()
		got, err := c.Claim(ctx, "evt-1", time.Minute)
		if err != nil || got != want {
			t.Fatalf("%s: Claim(evt-1) = %v, %v; want %v", name, got, err, want)
		}
	}
	step("first claim", a, cache.ClaimAcquired)
	step("another replica while A holds it", b, cache.ClaimHeld)
	if err := b.Release(ctx, "evt-1"); err != nil {
		t.Fatal(err)
	}
	step("B's release does not drop A's claim", b, cache.ClaimHeld)
	if err := a.Release(ctx, "evt-1"); err != nil {
		t.Fatal(err)
	}
	step("after A released it", b, cache.ClaimAcquired)
	if err := b.Done(ctx, "evt-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	step("done, seen by A", a, cache.ClaimDone)
	if err := a.Release(ctx, "evt-1"); err != nil {
		t.Fatal(err)
	}
	step("release leaves a done key done", b, cache.ClaimDone)

	other := mustClaims(t, replicaA, cfg.Namespace, "jobs")
	if got, err := other.Claim(ctx, "evt-1", time.Minute); err != nil || got != cache.ClaimAcquired {
		t.Errorf("Claim(evt-1) in claims %q = %v, %v; want acquired: names do not share keys", "jobs", got, err)
	}
}

// TestClaimsExpire checks that a claim whose holder died (never Done, never
// Released) lapses after its ttl, and a done mark after its window.
func TestClaimsExpire(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	c := mustClaims(t, redisStore(t, cfg), cfg.Namespace, "events")
	if got, _ := c.Claim(ctx, "k", 50*time.Millisecond); got != cache.ClaimAcquired {
		t.Fatalf("Claim = %v, want acquired", got)
	}
	if !eventually(t, 2*time.Second, func() bool { got, _ := c.Claim(ctx, "k", time.Minute); return got == cache.ClaimAcquired }) {
		t.Fatal("a claim with ttl 50ms was still held after 2s")
	}
	if err := c.Done(ctx, "d", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !eventually(t, 2*time.Second, func() bool { got, _ := c.Claim(ctx, "d", time.Minute); return got == cache.ClaimAcquired }) {
		t.Fatal("a done mark with window 50ms was still there after 2s")
	}
}

// TestClaimsOneWinner races replicas for the same keys: each key is
// acquired exactly once.
func TestClaimsOneWinner(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	var claims []*cache.Claims
	for range 4 {
		claims = append(claims, mustClaims(t, redisStore(t, cfg), cfg.Namespace, "race"))
	}
	const keys = 200
	var acquired [keys]atomic.Int32
	var wg sync.WaitGroup
	for _, c := range claims {
		wg.Go(func() {
			for k := range keys {
				st, err := c.Claim(ctx, string(rune('a'+k%26))+string(rune('0'+k/26)), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if st == cache.ClaimAcquired {
					acquired[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		if n := acquired[k].Load(); n != 1 {
			t.Errorf("key %d acquired %d times, want exactly once", k, n)
		}
	}
}

// TestClaimsRedisDown checks that claims fail fast, with ErrUnavailable,
// while Redis is cut off, and work again once it is back.
func TestClaimsRedisDown(t *testing.T) {
	ctx := t.Context()
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	cfg := redisConfig(t, namespace(t), proxy.Addr())
	c := mustClaims(t, redisStore(t, cfg), cfg.Namespace, "events")
	if _, err := c.Claim(ctx, "before", time.Minute); err != nil {
		t.Fatalf("Claim before the cut = %v", err)
	}
	proxy.Cut()
	for i := range 5 {
		start := time.Now()
		_, err := c.Claim(ctx, "during", time.Minute)
		if !errors.Is(err, cache.ErrUnavailable) {
			t.Fatalf("Claim #%d with Redis cut off = %v, want ErrUnavailable", i, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Claim #%d took %v with Redis cut off; the call timeout is 200ms", i, d)
		}
	}
	if err := c.Done(ctx, "during", time.Minute); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("Done with Redis cut off = %v, want ErrUnavailable", err)
	}
	proxy.Restore()
	if !eventually(t, 5*time.Second, func() bool { _, err := c.Claim(ctx, "after", time.Minute); return err == nil }) {
		t.Fatal("claims did not work again 5s after Redis came back")
	}
}

func TestClaimsNeedRedis(t *testing.T) {
	s := localStore(t, cache.Config{Namespace: "local"})
	if _, err := s.Claims("events"); !errors.Is(err, cache.ErrInvalidConfig) {
		t.Errorf("Claims on a Store without Redis = %v, want ErrInvalidConfig", err)
	}
	cfg := redisConfig(t, namespace(t), "")
	r := redisStore(t, cfg)
	if _, err := r.Claims(""); !errors.Is(err, cache.ErrInvalidConfig) {
		t.Errorf("Claims(\"\") = %v, want ErrInvalidConfig", err)
	}
	c := mustClaims(t, r, cfg.Namespace, "events")
	r.Close()
	if _, err := c.Claim(t.Context(), "k", time.Minute); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
	if _, err := r.Claims("events"); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Claims after Close = %v, want ErrClosed", err)
	}
}

func TestClaimsCancelled(t *testing.T) {
	cfg := redisConfig(t, namespace(t), "")
	c := mustClaims(t, redisStore(t, cfg), cfg.Namespace, "events")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Claim(ctx, "k", time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Claim with a cancelled context = %v, want context.Canceled", err)
	}
}
