package cache_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/config"
)

func TestConfigValidate(t *testing.T) {
	redis := func(mut func(*cache.Config)) cache.Config {
		c := cache.Config{Namespace: "shop", Redis: cache.RedisConfig{Addresses: []string{"127.0.0.1:6379"}}}
		mut(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  cache.Config
		want []string // substrings, one per expected problem
	}{
		{name: "zero value", cfg: cache.Config{}},
		{name: "standalone", cfg: redis(func(*cache.Config) {})},
		{name: "cluster", cfg: redis(func(c *cache.Config) {
			c.Redis.Mode, c.Redis.Addresses = cache.ModeCluster, []string{"10.0.0.1:7000", "10.0.0.2:7000"}
		})},
		{name: "sentinel", cfg: redis(func(c *cache.Config) {
			c.Redis.Mode, c.Redis.MasterSet, c.Redis.Addresses = cache.ModeSentinel, "mymaster", []string{"s1:26379", "s2:26379"}
		})},
		{name: "no namespace", cfg: redis(func(c *cache.Config) { c.Namespace = "" }),
			want: []string{"cache.namespace: is required with redis.addresses"}},
		{name: "bad namespace", cfg: redis(func(c *cache.Config) { c.Namespace = "a:b" }),
			want: []string{`cache.namespace: "a:b" may hold only`}},
		{name: "bad address", cfg: redis(func(c *cache.Config) { c.Redis.Addresses = []string{"redis"} }),
			want: []string{`cache.redis.addresses[0]: "redis" is not host:port`}},
		{name: "two standalone addresses", cfg: redis(func(c *cache.Config) { c.Redis.Addresses = []string{"a:1", "b:1"} }),
			want: []string{"cache.redis.addresses: standalone mode takes one address"}},
		{name: "sentinel without master", cfg: redis(func(c *cache.Config) { c.Redis.Mode = cache.ModeSentinel }),
			want: []string{"cache.redis.master_set: is required in sentinel mode"}},
		{name: "master set outside sentinel", cfg: redis(func(c *cache.Config) { c.Redis.MasterSet = "m" }),
			want: []string{"cache.redis.master_set: only applies to sentinel mode"}},
		{name: "cluster db", cfg: redis(func(c *cache.Config) { c.Redis.Mode, c.Redis.DB = cache.ModeCluster, 2 }),
			want: []string{"cache.redis.db: a cluster has only database 0"}},
		{name: "unknown mode and outage", cfg: redis(func(c *cache.Config) { c.Redis.Mode, c.Redis.Outage = "ring", "panic" }),
			want: []string{`cache.redis.mode: "ring" is not`, `cache.redis.outage: "panic" is not degraded or not_ready`}},
		{name: "negatives", cfg: cache.Config{TTL: -1, NegativeTTL: -1, Stale: -1, Jitter: 0.7, LocalMaxEntries: -1,
			Redis: cache.RedisConfig{Timeout: -1, FailureThreshold: -1}},
			want: []string{"cache.ttl:", "cache.negative_ttl:", "cache.stale:", "cache.jitter:", "cache.local_max_entries:", "cache.redis.timeout:", "cache.redis.failure_threshold:"}},
		{name: "per-cache overrides", cfg: cache.Config{Caches: map[string]cache.CacheConfig{"ok": {TTL: time.Second}, "bad name": {}, "neg": {TTL: -time.Second}}},
			want: []string{`cache.caches.bad name: "bad name" is not a cache name`, "cache.caches.neg.ttl: -1s is negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, cache.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant a problem containing %q", err, w)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

// TestConfigDefaults checks that the `default` tags, which a file gets,
// and the Default constants, which a Config built in code gets, agree.
func TestConfigDefaults(t *testing.T) {
	type root struct {
		Cache cache.Config `koanf:"cache"`
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("cache:\n  namespace: shop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load[root](t.Context(), config.WithDir(dir), config.WithEnvironment("test"))
	if err != nil {
		t.Fatal(err)
	}
	want := cache.Config{
		Namespace: "shop", TTL: cache.DefaultTTL, Jitter: 0.1, NegativeTTL: 30 * time.Second,
		RefreshTimeout: cache.DefaultRefreshTimeout, LocalMaxEntries: cache.DefaultLocalMaxEntries,
		Redis: cache.RedisConfig{
			Mode: cache.ModeStandalone, Timeout: cache.DefaultRedisTimeout, DialTimeout: cache.DefaultDialTimeout,
			FailureThreshold: cache.DefaultFailureThreshold, RetryInterval: cache.DefaultRetryInterval,
			MaxPendingWrites: cache.DefaultMaxPendingWrites, Outage: cache.OutageDegraded,
		},
	}
	if diff := cmp.Diff(want, got.Cache, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b config.Secret) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("defaults from the tags differ from the constants (-want +got):\n%s", diff)
	}
	if err := got.Cache.Validate(); err != nil {
		t.Errorf("Validate() of the defaults = %v", err)
	}
}

// TestConfigFileErrors: a bad value in a file is reported with its key and
// line by config.Load, through the `validate` tags.
func TestConfigFileErrors(t *testing.T) {
	type root struct {
		Cache cache.Config `koanf:"cache"`
	}
	dir := t.TempDir()
	body := "cache:\n  jitter: 2\n  redis:\n    mode: ring\n    addresses: [nohost]\n"
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load[root](t.Context(), config.WithDir(dir), config.WithEnvironment("test"))
	for _, want := range []string{"cache.jitter: 2 is above the maximum 0.5", "cache.redis.mode:", "cache.redis.addresses[0]:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load() = %v\nwant a problem containing %q", err, want)
		}
	}
}
