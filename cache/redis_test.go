package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/internal/testenv"
)

// countingLoader returns "<key>@<n>" with n the number of times it was
// called for the key.
type countingLoader struct {
	mu    sync.Mutex
	calls map[string]int
}

func newCountingLoader() *countingLoader { return &countingLoader{calls: map[string]int{}} }

func (l *countingLoader) load(_ context.Context, key string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[key]++
	return fmt.Sprintf("%s@%d", key, l.calls[key]), nil
}

func (l *countingLoader) count(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[key]
}

func (l *countingLoader) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.calls {
		n += c
	}
	return n
}

func TestBothTiers(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	as := redisStore(t, cfg)
	a := mustNew[string, string](t, as, "tiers")
	b := mustNew[string, string](t, redisStore(t, cfg), "tiers")
	loader := newCountingLoader()

	if got, err := a.GetOrLoad(ctx, "k", loader.load); err != nil || got != "k@1" {
		t.Fatalf("a.GetOrLoad(k) = %q, %v; want k@1", got, err)
	}
	client := testenv.RedisClient(t)
	raw, err := client.Do(ctx, client.B().Get().Key(cache.RedisKey(a, "k")).Build()).AsBytes()
	if err != nil || len(raw) == 0 {
		t.Fatalf("Redis GET %s after a load = %q, %v; want the entry", cache.RedisKey(a, "k"), raw, err)
	}
	// The other process finds it in Redis without loading.
	if got, err := b.GetOrLoad(ctx, "k", loader.load); err != nil || got != "k@1" {
		t.Fatalf("b.GetOrLoad(k) = %q, %v; want k@1 from Redis", got, err)
	}
	// And so does this one once its own copy is gone.
	cache.DropLocal(a, "k")
	if got, err := a.Get(ctx, "k"); err != nil || got != "k@1" {
		t.Fatalf("a.Get(k) from Redis = %q, %v", got, err)
	}
	if n := loader.count("k"); n != 1 {
		t.Errorf("loader called %d times, want 1", n)
	}
	if _, err := b.Get(ctx, "absent"); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("Get(absent) = %v, want ErrMiss", err)
	}
	if err := as.Check(ctx); err != nil {
		t.Errorf("Check() with Redis up = %v", err)
	}
}

func TestRedisKeyFormat(t *testing.T) {
	cfg := redisConfig(t, "shop", "")
	s := localStore(t, cfg)
	plain := mustNew[string, string](t, s, "names")
	if got, want := cache.RedisKey(plain, "a:b"), "shop:names:1:a:b"; got != want {
		t.Errorf("key of a string cache = %q, want %q", got, want)
	}
	v2 := mustNew[int, []byte](t, s, "blobs", cache.WithVersion("2"))
	if got, want := cache.RedisKey(v2, -7), "shop:blobs:2:-7"; got != want {
		t.Errorf("key with WithVersion(2) = %q, want %q", got, want)
	}
	typed := mustNew[string, profile](t, s, "profiles")
	other := mustNew[string, struct{ Name string }](t, s, "profiles2")
	k1, k2 := cache.RedisKey(typed, "x"), cache.RedisKey(other, "x")
	if k1[len("shop:profiles:"):][:2] != "1-" || len(k1) != len("shop:profiles:1-12345678:x") {
		t.Errorf("key of a JSON cache = %q, want shop:profiles:1-<fingerprint>:x", k1)
	}
	if k1[len("shop:profiles:"):] == k2[len("shop:profiles2:"):] {
		t.Errorf("two value types got the same version: %q and %q", k1, k2)
	}
}

// TestInvalidationBetweenInstances is the acceptance test for
// invalidation: Set and Delete in one process reach the in-process tier of
// another. It logs the delays it measures (BENCHMARKS.md has the method).
func TestInvalidationBetweenInstances(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	a := mustNew[string, string](t, redisStore(t, cfg), "shared")
	b := mustNew[string, string](t, redisStore(t, cfg), "shared")
	var delays []time.Duration
	for i := range 20 {
		key := fmt.Sprint("k", i)
		if err := a.Set(ctx, key, "v1"); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(ctx, key); err != nil || got != "v1" {
			t.Fatalf("b.Get(%s) = %q, %v; want v1", key, got, err)
		}
		start := time.Now()
		if err := a.Set(ctx, key, "v2"); err != nil {
			t.Fatal(err)
		}
		if !eventually(t, 2*time.Second, func() bool { got, _ := b.Get(ctx, key); return got == "v2" }) {
			t.Fatalf("b still serves v1 of %s 2s after a.Set(v2)", key)
		}
		delays = append(delays, time.Since(start))
		start = time.Now()
		if err := a.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if !eventually(t, 2*time.Second, func() bool { _, err := b.Get(ctx, key); return errors.Is(err, cache.ErrMiss) }) {
			t.Fatalf("b still serves %s 2s after a.Delete", key)
		}
		delays = append(delays, time.Since(start))
	}
	slices.Sort(delays)
	t.Logf("Set/Delete to the other process's in-process tier: median %v, max %v over %d changes (polled every 5ms)",
		delays[len(delays)/2], delays[len(delays)-1], len(delays))
}

func TestPoisonedEntry(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	c := mustNew[string, profile](t, redisStore(t, cfg), "poison")
	client := testenv.RedisClient(t)
	for name, garbage := range map[string]string{
		"foreign bytes":       "written by another program",
		"undecodable payload": "\x01\x00\x00\x00\x01\x9a\x00\x00\x00\x00{not json",
		"empty":               "",
	} {
		t.Run(name, func(t *testing.T) {
			key := cache.RedisKey(c, name)
			if err := client.Do(ctx, client.B().Set().Key(key).Value(garbage).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, name); !errors.Is(err, cache.ErrMiss) {
				t.Errorf("Get of a poisoned entry = %v, want ErrMiss", err)
			}
			client.Do(ctx, client.B().Set().Key(key).Value(garbage).Build())
			got, err := c.GetOrLoad(ctx, name, func(context.Context, string) (profile, error) { return profile{Name: "fresh"}, nil })
			if err != nil || got.Name != "fresh" {
				t.Fatalf("GetOrLoad over a poisoned entry = %+v, %v; want the loaded value", got, err)
			}
			cache.DropLocal(c, name)
			if got, err := c.Get(ctx, name); err != nil || got.Name != "fresh" {
				t.Errorf("Get after the reload = %+v, %v; want the reloaded value from Redis", got, err)
			}
		})
	}
}

func TestCodecRoundTripRedis(t *testing.T) {
	cfg := redisConfig(t, namespace(t), "")
	for _, tt := range codecCases() {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, redisStore(t, cfg), true) })
	}
}

func TestNegativeCachingShared(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	cfg.NegativeTTL = time.Minute
	a := mustNew[string, string](t, redisStore(t, cfg), "neg")
	b := mustNew[string, string](t, redisStore(t, cfg), "neg")
	var calls atomic.Int32
	notFound := func(context.Context, string) (string, error) { calls.Add(1); return "", cache.ErrNotFound }
	if _, err := a.GetOrLoad(ctx, "ghost", notFound); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("a.GetOrLoad = %v, want ErrNotFound", err)
	}
	if _, err := b.GetOrLoad(ctx, "ghost", notFound); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("b.GetOrLoad = %v, want ErrNotFound from Redis", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("loader called %d times across two processes, want 1", n)
	}
}

func TestStampedeRedis(t *testing.T) {
	cfg := redisConfig(t, namespace(t), "")
	stampede(t, mustNew[string, string](t, redisStore(t, cfg), "stampede"))
}

// TestRedisOutage is the acceptance test for an outage: Redis is cut off
// through a proxy mid-run; every read still answers, the loader runs about
// once per key rather than once per read, readiness reports the cache
// degraded, and the cache recovers by itself when the proxy is restored.
func TestRedisOutage(t *testing.T) {
	ctx := t.Context()
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	cfg := redisConfig(t, namespace(t), proxy.Addr())
	s := redisStore(t, cfg)
	c := mustNew[string, string](t, s, "outage")
	loader := newCountingLoader()
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprint("key", i)
	}
	for _, k := range keys[:20] { // warm half the keys
		if _, err := c.GetOrLoad(ctx, k, loader.load); err != nil {
			t.Fatal(err)
		}
	}

	var reads, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := c.GetOrLoad(rctx, keys[i%len(keys)], loader.load)
				cancel()
				reads.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("GetOrLoad during the outage = %v", err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	proxy.Cut()
	var outageErr *cache.OutageError
	if !eventually(t, 3*time.Second, func() bool { return errors.As(s.Check(ctx), &outageErr) }) {
		t.Fatalf("Check() with Redis cut off = %v, want an *OutageError", s.Check(ctx))
	}
	if !outageErr.Degraded() || !errors.Is(outageErr, cache.ErrUnavailable) {
		t.Errorf("Check() = %v; want Degraded() and ErrUnavailable", outageErr)
	}
	time.Sleep(500 * time.Millisecond) // reads go on against the cut proxy
	if err := c.Set(ctx, "key0", "written during the outage"); err != nil {
		t.Errorf("Set during the outage = %v, want nil (best effort)", err)
	}
	proxy.Restore()
	if !eventually(t, 5*time.Second, func() bool { return s.Check(ctx) == nil }) {
		t.Fatalf("Check() 5s after Redis came back = %v", s.Check(ctx))
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	perKey := make([]int, len(keys))
	for i, k := range keys {
		perKey[i] = loader.count(k)
	}
	t.Logf("%d reads, %d failed, %d loader calls for %d keys: %v", reads.Load(), failures.Load(), loader.total(), len(keys), perKey)
	if failures.Load() != 0 {
		t.Errorf("%d of %d reads failed during the outage", failures.Load(), reads.Load())
	}
	// Each key is loaded once before or during the outage, and at most
	// once more after recovery, when the process drops what it kept
	// without Redis.
	for i, n := range perKey {
		if n > 3 {
			t.Errorf("loader ran %d times for %s; want about once per key, not once per read", n, keys[i])
		}
	}
	if int64(loader.total()) > reads.Load()/4 {
		t.Errorf("%d loader calls for %d reads", loader.total(), reads.Load())
	}
	// The write made during the outage was replayed as a deletion on
	// recovery, so Redis no longer holds the value from before it.
	cache.DropLocal(c, "key0")
	if got, err := c.Get(ctx, "key0"); err == nil && got == "key0@1" {
		t.Error("key0, set during the outage, still holds its value from before the outage in Redis")
	}
	client := testenv.RedisClient(t)
	// And the shared tier is in use again.
	if _, err := c.GetOrLoad(ctx, "after", loader.load); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.Do(ctx, client.B().Exists().Key(cache.RedisKey(c, "after")).Build()).AsInt64(); n != 1 {
		t.Error("a value loaded after recovery did not reach Redis")
	}
}

// TestRedisStall: a Redis that accepts and never answers costs a read at
// most the Redis timeout until the breaker opens; then reads skip it.
func TestRedisStall(t *testing.T) {
	ctx := t.Context()
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	cfg := redisConfig(t, namespace(t), proxy.Addr())
	s := redisStore(t, cfg)
	c := mustNew[string, string](t, s, "stall")
	loader := newCountingLoader()
	proxy.Stall()
	for i := range 10 {
		start := time.Now()
		if _, err := c.GetOrLoad(ctx, fmt.Sprint(i), loader.load); err != nil {
			t.Fatalf("GetOrLoad with Redis stalled = %v", err)
		}
		took := time.Since(start)
		if took > 2*cfg.Redis.Timeout+time.Second {
			t.Errorf("read %d took %v with a %v Redis timeout", i, took, cfg.Redis.Timeout)
		}
		if i >= cfg.Redis.FailureThreshold+1 && took > cfg.Redis.Timeout {
			t.Errorf("read %d took %v after the breaker should have opened", i, took)
		}
	}
	var oe *cache.OutageError
	if err := s.Check(ctx); !errors.As(err, &oe) {
		t.Errorf("Check() with Redis stalled = %v, want *OutageError", err)
	}
	proxy.Restore()
	if !eventually(t, 10*time.Second, func() bool { return s.Check(ctx) == nil }) {
		t.Fatalf("Check() after the stall ended = %v", s.Check(ctx))
	}
}

// TestOpenWhileRedisDown: a service starts while Redis is down, serves
// from its loaders, and takes Redis into use when it comes up.
func TestOpenWhileRedisDown(t *testing.T) {
	ctx := t.Context()
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	proxy.Cut()
	cfg := redisConfig(t, namespace(t), proxy.Addr())
	s := redisStore(t, cfg)
	if err := s.Check(ctx); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Check() after Open with Redis down = %v, want ErrUnavailable", err)
	}
	c := mustNew[string, string](t, s, "late")
	loader := newCountingLoader()
	if got, err := c.GetOrLoad(ctx, "k", loader.load); err != nil || got != "k@1" {
		t.Fatalf("GetOrLoad with Redis down = %q, %v", got, err)
	}
	proxy.Restore()
	if !eventually(t, 5*time.Second, func() bool { return s.Check(ctx) == nil }) {
		t.Fatalf("Check() after Redis came up = %v", s.Check(ctx))
	}
	if _, err := c.GetOrLoad(ctx, "k2", loader.load); err != nil {
		t.Fatal(err)
	}
	client := testenv.RedisClient(t)
	if n, _ := client.Do(ctx, client.B().Exists().Key(cache.RedisKey(c, "k2")).Build()).AsInt64(); n != 1 {
		t.Error("after Redis came up, a loaded value did not reach it")
	}
}

func TestOutageNotReady(t *testing.T) {
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	proxy.Cut()
	cfg := redisConfig(t, namespace(t), proxy.Addr())
	cfg.Redis.Outage = cache.OutageNotReady
	s := redisStore(t, cfg)
	var oe *cache.OutageError
	if err := s.Check(t.Context()); !errors.As(err, &oe) || oe.Degraded() {
		t.Fatalf("Check() with outage: not_ready = %v; want an *OutageError that is not Degraded", err)
	}
}

// pairWithProxy returns two caches called name in one namespace: a on
// Redis directly, b (of Store bs) through proxy.
func pairWithProxy(t *testing.T, name string) (a, b *cache.Cache[string, string], bs *cache.Store, proxy *testenv.Proxy) {
	ns := namespace(t)
	proxy = testenv.NewProxy(t, testenv.Redis.HostPort(t))
	a = mustNew[string, string](t, redisStore(t, redisConfig(t, ns, "")), name)
	bs = redisStore(t, redisConfig(t, ns, proxy.Addr()))
	return a, mustNew[string, string](t, bs, name), bs, proxy
}

// TestReconnectDropsMissedInvalidations: a process cut off from Redis
// misses the invalidations of that time; when it reconnects it drops what
// it copied from Redis rather than serve it until the TTL.
func TestReconnectDropsMissedInvalidations(t *testing.T) {
	ctx := t.Context()
	a, b, bs, proxy := pairWithProxy(t, "missed")
	if err := a.Set(ctx, "k", "old"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Get(ctx, "k"); got != "old" {
		t.Fatalf("b.Get = %q, want old", got)
	}
	proxy.Cut()
	if !eventually(t, 3*time.Second, func() bool { return bs.Check(ctx) != nil }) {
		t.Fatal("b never noticed the cut")
	}
	if err := a.Set(ctx, "k", "new"); err != nil { // b cannot hear of it
		t.Fatal(err)
	}
	if got, _ := b.Get(ctx, "k"); got != "old" {
		t.Fatalf("b.Get while cut off = %q; want its own copy, old", got)
	}
	proxy.Restore()
	if !eventually(t, 5*time.Second, func() bool { got, _ := b.Get(ctx, "k"); return got == "new" }) {
		t.Fatal("after reconnecting, b still serves the value it copied before the invalidation it missed")
	}
}

// TestWriteDuringOutageReplayed: a Delete that could not reach Redis is
// replayed when Redis is back, and reaches the other processes.
func TestWriteDuringOutageReplayed(t *testing.T) {
	ctx := t.Context()
	a, b, _, proxy := pairWithProxy(t, "replay")
	if err := a.Set(ctx, "k", "stale"); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	if err := b.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete with Redis cut off = %v, want nil (best effort)", err)
	}
	if got, _ := a.Get(ctx, "k"); got != "stale" {
		t.Fatalf("a.Get before the replay = %q", got)
	}
	proxy.Restore()
	if !eventually(t, 5*time.Second, func() bool { _, err := a.Get(ctx, "k"); return errors.Is(err, cache.ErrMiss) }) {
		t.Fatal("the Delete made during the outage never reached the other process")
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	cfg := redisConfig(t, namespace(t), "")
	cfg.Redis.Username = "loam-no-such-user"
	cfg.Redis.Password = config.NewSecret("wrong")
	if _, err := cache.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("Open with credentials the server refuses = %v; want its WRONGPASS, as retrying cannot help", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := cache.Open(cancelled, cache.Config{}); err != context.Canceled {
		t.Errorf("Open with a cancelled context = %v, want context.Canceled", err)
	}
	if _, err := cache.Open(ctx, cache.Config{Redis: cache.RedisConfig{Addresses: []string{"127.0.0.1:6379"}}}); !errors.Is(err, cache.ErrInvalidConfig) {
		t.Errorf("Open with Redis and no namespace = %v, want ErrInvalidConfig", err)
	}
}

// countingHandler counts the log records with a given message.
type countingHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.msg, h.n}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.msg, h.n}
}

// TestSlowRedisStaysDown: a Redis that answers, but later than the call
// timeout, is as unusable to callers as one that does not answer. The
// breaker stays open while it is slow, rather than closing on every probe
// and making the next callers wait out the timeout to open it again.
func TestSlowRedisStaysDown(t *testing.T) {
	ctx := t.Context()
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	cfg := redisConfig(t, namespace(t), proxy.Addr()) // timeout 200ms, probe every 100ms
	var recovered atomic.Int64
	log := slog.New(countingHandler{testLogger(t).Handler(), "cache: redis available again", &recovered})
	s, err := cache.Open(ctx, cfg, cache.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cleanNamespace(t, cfg.Namespace)
	c := mustNew[string, string](t, s, "slow")
	loader := newCountingLoader()

	proxy.Latency(500 * time.Millisecond)
	warm := 0
	if !eventually(t, 10*time.Second, func() bool {
		warm++
		c.GetOrLoad(ctx, fmt.Sprint("warm", warm), loader.load)
		return !cache.Available(s)
	}) {
		t.Fatal("the breaker never opened with Redis 500ms late and a 200ms timeout")
	}
	before := recovered.Load()
	for i := range 40 { // 2s: about 20 probes
		if _, err := c.GetOrLoad(ctx, fmt.Sprint("k", i), loader.load); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := recovered.Load() - before; n != 0 {
		t.Errorf("the breaker closed %d times while Redis stayed 500ms late; want 0: a probe must meet the call timeout", n)
	}
	proxy.Restore()
	if !eventually(t, 5*time.Second, func() bool { return s.Check(ctx) == nil }) {
		t.Fatalf("Check() after Redis was fast again = %v", s.Check(ctx))
	}
}
