package service_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/internal/testenv"
)

// TestCacheWiring: the cache section opens the server's Store on Redis,
// readiness reports a Redis outage as degraded, and the drain closes it.
func TestCacheWiring(t *testing.T) {
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	b := make([]byte, 6)
	rand.Read(b)
	cfg := testConfig()
	cfg.Cache = cache.Config{
		Namespace: "loamtest-" + hex.EncodeToString(b),
		Redis:     cache.RedisConfig{Addresses: []string{proxy.Addr()}, Timeout: 200 * time.Millisecond, FailureThreshold: 2, RetryInterval: 100 * time.Millisecond},
	}
	r := start(t, cfg, stub())
	names, err := cache.New[string, string](r.srv.Cache(), "names")
	if err != nil {
		t.Fatal(err)
	}
	if err := names.Set(t.Context(), "tree-1", "oak"); err != nil {
		t.Fatal(err)
	}
	readyz := func() (int, map[string]string) {
		code, body := r.get(t, "/readyz")
		var res struct{ Checks map[string]string }
		json.Unmarshal([]byte(body), &res)
		return code, res.Checks
	}
	if code, checks := readyz(); code != http.StatusOK || checks["cache"] != "ok" {
		t.Errorf("/readyz with Redis up = %d %v, want 200 with cache ok", code, checks)
	}
	proxy.Cut()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Reads keep answering from the process while Redis is away.
		if v, err := names.Get(t.Context(), "tree-1"); err != nil || v != "oak" {
			t.Fatalf("Get during the outage = %q, %v; want oak", v, err)
		}
		code, checks := readyz()
		if code == http.StatusOK && strings.HasPrefix(checks["cache"], "degraded") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz with Redis cut = %d %v, want 200 with cache degraded", code, checks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	proxy.Restore()
	r.srv.Shutdown(context.Background())
	if _, err := names.Get(t.Context(), "tree-1"); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Get after Shutdown = %v, want ErrClosed", err)
	}
}
