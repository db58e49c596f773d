package cache_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/internal/testenv"
)

// testLogger writes to the test's output, shown when it fails or with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// namespace returns a namespace no other test run uses.
func namespace(t testing.TB) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "loamtest-" + hex.EncodeToString(b)
}

// localStore opens a Store without Redis.
func localStore(t testing.TB, cfg cache.Config) *cache.Store {
	t.Helper()
	s, err := cache.Open(context.Background(), cfg, cache.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Open(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// redisConfig is a configuration of a Store on the test Redis (or addr),
// in a namespace of its own, with the breaker and probe quick enough for
// tests.
func redisConfig(t testing.TB, ns, addr string) cache.Config {
	t.Helper()
	if addr == "" {
		addr = testenv.Redis.HostPort(t)
	}
	return cache.Config{
		Namespace: ns,
		Redis: cache.RedisConfig{
			Addresses:        []string{addr},
			Timeout:          200 * time.Millisecond,
			DialTimeout:      500 * time.Millisecond,
			FailureThreshold: 3,
			RetryInterval:    100 * time.Millisecond,
		},
	}
}

// redisStore opens a Store on Redis and deletes its namespace at the end.
func redisStore(t testing.TB, cfg cache.Config) *cache.Store {
	t.Helper()
	s := localStore(t, cfg)
	cleanNamespace(t, cfg.Namespace)
	return s
}

// cleanNamespace deletes every key of ns from the test Redis when t ends.
func cleanNamespace(t testing.TB, ns string) {
	client := testenv.RedisClient(t)
	t.Cleanup(func() {
		ctx := context.Background()
		var cursor uint64
		for {
			e, err := client.Do(ctx, client.B().Scan().Cursor(cursor).Match(ns+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Logf("cleaning namespace %s: %v", ns, err)
				return
			}
			for _, k := range e.Elements {
				client.Do(ctx, client.B().Del().Key(k).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
}

// eventually polls cond every 5ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

func mustNew[K cache.Key, V any](t testing.TB, s *cache.Store, name string, opts ...cache.Option) *cache.Cache[K, V] {
	t.Helper()
	c, err := cache.New[K, V](s, name, opts...)
	if err != nil {
		t.Fatalf("New(%q) = %v", name, err)
	}
	return c
}
