package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/cache"
)

func TestGetSetDeleteInProcess(t *testing.T) {
	ctx := t.Context()
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "names")
	if _, err := c.Get(ctx, "a"); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(a) on an empty cache = %v, want ErrMiss", err)
	}
	if err := c.Set(ctx, "a", "alice"); err != nil {
		t.Fatalf("Set(a) = %v", err)
	}
	if got, err := c.Get(ctx, "a"); err != nil || got != "alice" {
		t.Fatalf("Get(a) = %q, %v; want alice, nil", got, err)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete(a) = %v", err)
	}
	if _, err := c.Get(ctx, "a"); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(a) after Delete = %v, want ErrMiss", err)
	}
}

func TestGetOrLoad(t *testing.T) {
	ctx := t.Context()
	c := mustNew[int, string](t, localStore(t, cache.Config{}), "users")
	var calls atomic.Int32
	loader := func(_ context.Context, id int) (string, error) {
		calls.Add(1)
		return fmt.Sprintf("user-%d", id), nil
	}
	for range 3 {
		if got, err := c.GetOrLoad(ctx, 7, loader); err != nil || got != "user-7" {
			t.Fatalf("GetOrLoad(7) = %q, %v; want user-7, nil", got, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("loader called %d times for three reads, want 1", n)
	}
	if got, err := c.Get(ctx, 7); err != nil || got != "user-7" {
		t.Errorf("Get(7) after GetOrLoad = %q, %v", got, err)
	}
}

func TestLoaderErrorIsNotCached(t *testing.T) {
	ctx := t.Context()
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "flaky")
	boom := errors.New("database down")
	if _, err := c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("GetOrLoad with a failing loader = %v, want %v", err, boom)
	}
	if got, err := c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "v", nil }); err != nil || got != "v" {
		t.Fatalf("GetOrLoad after a failure = %q, %v; want v, nil", got, err)
	}
}

func TestNegativeCaching(t *testing.T) {
	ctx := t.Context()
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "maybe",
		cache.WithNegativeTTL(150*time.Millisecond), cache.WithTTL(time.Hour))
	var calls atomic.Int32
	notFound := func(context.Context, string) (string, error) {
		calls.Add(1)
		return "", fmt.Errorf("no row: %w", cache.ErrNotFound)
	}
	for range 3 {
		if _, err := c.GetOrLoad(ctx, "ghost", notFound); !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("GetOrLoad(ghost) = %v, want ErrNotFound", err)
		}
	}
	if _, err := c.Get(ctx, "ghost"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Get(ghost) = %v, want the remembered ErrNotFound", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("loader called %d times within the negative TTL, want 1", n)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := c.GetOrLoad(ctx, "ghost", notFound); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("GetOrLoad(ghost) after the negative TTL = %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("loader called %d times after the negative TTL ran out, want 2", n)
	}

	off := mustNew[string, string](t, localStore(t, cache.Config{}), "nonegative", cache.WithNegativeTTL(0))
	calls.Store(0)
	for range 2 {
		if _, err := off.GetOrLoad(ctx, "ghost", notFound); !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("GetOrLoad(ghost) without negative caching = %v", err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("without negative caching the loader ran %d times for 2 reads, want 2", n)
	}
}

func TestTTLAndJitter(t *testing.T) {
	ctx := t.Context()
	c := mustNew[string, int](t, localStore(t, cache.Config{Jitter: 0.5}), "short", cache.WithTTL(100*time.Millisecond))
	if err := c.Set(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatalf("Get right after Set = %v", err)
	}
	if !eventually(t, time.Second, func() bool { _, err := c.Get(ctx, "k"); return errors.Is(err, cache.ErrMiss) }) {
		t.Fatal("entry with a 100ms TTL still served after 1s")
	}
	// With jitter, entries set together do not all expire together: the
	// TTLs are spread over [50ms, 100ms].
	for i := range 200 {
		_ = c.Set(ctx, fmt.Sprint(i), i)
	}
	time.Sleep(75 * time.Millisecond)
	alive := 0
	for i := range 200 {
		if _, err := c.Get(ctx, fmt.Sprint(i)); err == nil {
			alive++
		}
	}
	if alive == 0 || alive == 200 {
		t.Errorf("75ms after 200 Sets with TTL 100ms and jitter 0.5, %d are alive; want some but not all", alive)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	ctx := t.Context()
	c := mustNew[string, int](t, localStore(t, cache.Config{}), "swr",
		cache.WithTTL(100*time.Millisecond), cache.WithStale(time.Second))
	var version atomic.Int32
	release := make(chan struct{})
	loader := func(ctx context.Context, _ string) (int, error) {
		v := version.Add(1)
		if v > 1 {
			<-release // the refresh is slow
		}
		return int(v), nil
	}
	if got, _ := c.GetOrLoad(ctx, "k", loader); got != 1 {
		t.Fatalf("first GetOrLoad = %d, want 1", got)
	}
	time.Sleep(150 * time.Millisecond) // past the TTL, within the stale window
	start := time.Now()
	for range 5 {
		if got, err := c.GetOrLoad(ctx, "k", loader); err != nil || got != 1 {
			t.Fatalf("GetOrLoad on a stale entry = %d, %v; want the stale 1 at once", got, err)
		}
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("serving a stale value took %v; it must not wait for the refresh", d)
	}
	close(release)
	if !eventually(t, 2*time.Second, func() bool { got, _ := c.GetOrLoad(ctx, "k", loader); return got == 2 }) {
		t.Fatal("the background refresh never replaced the stale value")
	}
	if n := version.Load(); n != 2 {
		t.Errorf("loader ran %d times, want 2: one load and one refresh for five stale reads", n)
	}
	// Past TTL plus stale, the value is loaded again, not served.
	time.Sleep(1200 * time.Millisecond)
	if got, _ := c.GetOrLoad(ctx, "k", loader); got != 3 {
		t.Errorf("GetOrLoad past the stale bound = %d, want a fresh load (3)", got)
	}
}

// TestStampede is the acceptance test: 1 000 concurrent GetOrLoad of a cold
// key run the loader once, and every caller gets its value.
func TestStampede(t *testing.T) {
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "stampede")
	stampede(t, c)
}

func stampede(t *testing.T, c *cache.Cache[string, string]) {
	t.Helper()
	var calls atomic.Int32
	start := make(chan struct{})
	loader := func(context.Context, string) (string, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond)
		return "hot", nil
	}
	var wg sync.WaitGroup
	var wrong atomic.Int32
	for range 1000 {
		wg.Go(func() {
			<-start
			if v, err := c.GetOrLoad(t.Context(), "cold", loader); err != nil || v != "hot" {
				wrong.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("1000 concurrent GetOrLoad of a cold key ran the loader %d times, want 1", n)
	}
	if n := wrong.Load(); n != 0 {
		t.Errorf("%d of 1000 callers did not get the loaded value", n)
	}
}

func TestLoaderPanic(t *testing.T) {
	ctx := t.Context()
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "panics")
	entered := make(chan struct{})
	release := make(chan struct{})
	panicking := func(context.Context, string) (string, error) {
		close(entered)
		<-release
		panic("corrupt row")
	}
	errs := make(chan error, 11)
	go func() { _, err := c.GetOrLoad(ctx, "k", panicking); errs <- err }()
	<-entered
	for range 10 { // waiters of the panicking load
		go func() {
			_, err := c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "never", nil })
			errs <- err
		}()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	for range 11 {
		select {
		case err := <-errs:
			if !errors.Is(err, cache.ErrLoaderPanic) {
				t.Errorf("GetOrLoad during a panicking load = %v, want ErrLoaderPanic", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiter of a panicking loader hangs")
		}
	}
	// The key is free again.
	if got, err := c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "ok", nil }); err != nil || got != "ok" {
		t.Fatalf("GetOrLoad after a panic = %q, %v; want ok, nil", got, err)
	}
}

func TestCancelledLoader(t *testing.T) {
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "cancel")
	ownerCtx, cancelOwner := context.WithCancel(t.Context())
	entered := make(chan struct{})
	var calls atomic.Int32
	loader := func(ctx context.Context, _ string) (string, error) {
		if calls.Add(1) == 1 {
			close(entered)
			<-ctx.Done() // honours its context
			return "", fmt.Errorf("query aborted: %w", ctx.Err())
		}
		return "second", nil
	}
	ownerErr := make(chan error, 1)
	go func() { _, err := c.GetOrLoad(ownerCtx, "k", loader); ownerErr <- err }()
	<-entered
	waiter := make(chan string, 1)
	go func() { v, _ := c.GetOrLoad(t.Context(), "k", loader); waiter <- v }()
	time.Sleep(20 * time.Millisecond)
	cancelOwner()
	select {
	case err := <-ownerErr:
		if err != context.Canceled {
			t.Errorf("GetOrLoad whose context was cancelled = %v, want context.Canceled unwrapped", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the caller whose context was cancelled hangs")
	}
	select {
	case v := <-waiter:
		if v != "second" {
			t.Errorf("a waiter with a live context got %q, want a fresh load (second)", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiter hangs after the loading caller's context was cancelled")
	}
}

func TestWaiterContextEnds(t *testing.T) {
	c := mustNew[string, string](t, localStore(t, cache.Config{}), "waiter")
	release := make(chan struct{})
	go c.GetOrLoad(t.Context(), "k", func(context.Context, string) (string, error) { <-release; return "v", nil })
	defer close(release)
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	if _, err := c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "w", nil }); err != context.DeadlineExceeded {
		t.Errorf("a waiter whose deadline passed = %v, want context.DeadlineExceeded unwrapped", err)
	}
}

func TestClosedStore(t *testing.T) {
	ctx := t.Context()
	s, err := cache.Open(ctx, cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := mustNew[string, string](t, s, "closing")
	_ = c.Set(ctx, "k", "v")
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	loader := func(context.Context, string) (string, error) { return "v", nil }
	for name, err := range map[string]error{
		"Get":       second(c.Get(ctx, "k")),
		"GetOrLoad": second(c.GetOrLoad(ctx, "k", loader)),
		"Set":       c.Set(ctx, "k", "v"),
		"Delete":    c.Delete(ctx, "k"),
		"Check":     s.Check(ctx),
		"New":       second(cache.New[string, string](s, "late")),
	} {
		if !errors.Is(err, cache.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestNewErrors(t *testing.T) {
	s := localStore(t, cache.Config{})
	mustNew[string, string](t, s, "taken")
	for name, err := range map[string]error{
		"duplicate name":  second(cache.New[string, int](s, "taken")),
		"bad name":        second(cache.New[string, int](s, "a:b")),
		"bad version":     second(cache.New[string, int](s, "v", cache.WithVersion("1:2"))),
		"codec of a type": second(cache.New[string, int](s, "codec", cache.WithCodec[string](upperCodec{}))),
		"zero ttl":        second(cache.New[string, int](s, "ttl", cache.WithTTL(0))),
		"no codec":        second(cache.New[string, any](s, "any")),
		"nil store":       second(cache.New[string, int](nil, "nil")),
	} {
		if !errors.Is(err, cache.ErrInvalidConfig) {
			t.Errorf("New with %s = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestCacheConfigOverrides(t *testing.T) {
	ctx := t.Context()
	s := localStore(t, cache.Config{
		TTL:    time.Hour,
		Caches: map[string]cache.CacheConfig{"tuned": {TTL: 50 * time.Millisecond}},
	})
	tuned := mustNew[string, string](t, s, "tuned", cache.WithTTL(time.Hour))
	_ = tuned.Set(ctx, "k", "v")
	if !eventually(t, time.Second, func() bool { _, err := tuned.Get(ctx, "k"); return errors.Is(err, cache.ErrMiss) }) {
		t.Error("cache.caches.tuned.ttl 50ms did not override WithTTL(1h)")
	}
}

type profile struct {
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
}

type tenantKey string

// TestKeyTypes covers integer and defined key types.
func TestKeyTypes(t *testing.T) {
	ctx := t.Context()
	s := localStore(t, cache.Config{})
	u := mustNew[uint16, string](t, s, "u16")
	_ = u.Set(ctx, 65535, "max")
	if got, _ := u.Get(ctx, 65535); got != "max" {
		t.Errorf("uint16 key: Get = %q", got)
	}
	k := mustNew[tenantKey, profile](t, s, "tenants")
	_ = k.Set(ctx, "acme/1", profile{Name: "acme"})
	if got, _ := k.Get(ctx, "acme/1"); got.Name != "acme" {
		t.Errorf("defined string key: Get = %+v", got)
	}
}

// upperCodec is a custom codec that stores strings upper-cased and marks
// them, to show that WithCodec is used.
type upperCodec struct{}

func (upperCodec) Encode(dst []byte, v string) ([]byte, error) { return append(dst, "U:"+v...), nil }
func (upperCodec) Decode(b []byte) (string, error) {
	if len(b) < 2 || string(b[:2]) != "U:" {
		return "", errors.New("not an upperCodec value")
	}
	return string(b[2:]), nil
}

var _ cache.Codec[string] = upperCodec{}

// codecCases are the value types of the codec round trips, in process and
// through Redis.
func codecCases() []struct {
	name string
	run  func(t *testing.T, s *cache.Store, viaRedis bool)
} {
	ts := timestamppb.New(time.Date(2026, 11, 3, 10, 0, 0, 5, time.UTC))
	return []struct {
		name string
		run  func(t *testing.T, s *cache.Store, viaRedis bool)
	}{
		{"proto", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[string, *timestamppb.Timestamp](t, s, "proto"), ts, viaRedis, protocmp.Transform())
		}},
		{"json struct", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[string, profile](t, s, "json"), profile{Name: "ana", Tags: []string{"a", "b"}, Attrs: map[string]string{"k": "v"}}, viaRedis)
		}},
		{"json pointer", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[int64, *profile](t, s, "jsonptr"), &profile{Name: "bo"}, viaRedis)
		}},
		{"bytes", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[string, []byte](t, s, "bytes"), []byte{0, 1, 2, 255}, viaRedis)
		}},
		{"string", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[string, string](t, s, "string"), "ünïcode", viaRedis)
		}},
		{"empty string", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[string, string](t, s, "emptystring"), "", viaRedis)
		}},
		{"custom codec", func(t *testing.T, s *cache.Store, viaRedis bool) {
			roundTrip(t, mustNew[string, string](t, s, "custom", cache.WithCodec[string](upperCodec{})), "shout", viaRedis)
		}},
	}
}

// roundTrip sets want and reads it back, from Redis when viaRedis (the
// in-process copy dropped first).
func roundTrip[K cache.Key, V any](t *testing.T, c *cache.Cache[K, V], want V, viaRedis bool, opts ...cmp.Option) {
	t.Helper()
	ctx := t.Context()
	var key K
	if err := c.Set(ctx, key, want); err != nil {
		t.Fatalf("Set = %v", err)
	}
	if viaRedis {
		cache.DropLocal(c, key)
	}
	got, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get = %v", err)
	}
	if diff := cmp.Diff(want, got, opts...); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestCodecRoundTripInProcess(t *testing.T) {
	for _, tt := range codecCases() {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, localStore(t, cache.Config{}), false) })
	}
}
