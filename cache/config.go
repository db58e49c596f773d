package cache

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"time"

	"github.com/loamhq/loam/config"
)

// Defaults of a Config field left zero, as the `default` tags give them to
// a configuration loaded from files.
const (
	DefaultTTL              = 5 * time.Minute
	DefaultLocalMaxEntries  = 10_000
	DefaultRefreshTimeout   = 10 * time.Second
	DefaultRedisTimeout     = 100 * time.Millisecond
	DefaultDialTimeout      = time.Second
	DefaultFailureThreshold = 5
	DefaultRetryInterval    = time.Second
	DefaultMaxPendingWrites = 10_000
)

// Redis modes (RedisConfig.Mode).
const (
	ModeStandalone = "standalone"
	ModeCluster    = "cluster"
	ModeSentinel   = "sentinel"
)

// Outage settings (RedisConfig.Outage).
const (
	OutageDegraded = "degraded"
	OutageNotReady = "not_ready"
)

// Config is the `cache` section of a Loam service's configuration. The zero
// value is valid: an in-process cache with the defaults above, and no
// Redis.
//
// Fields left zero in a Config built in code take the defaults above, as
// the `default` tags give them to a file, except Jitter, NegativeTTL and
// Stale, where zero means none.
type Config struct {
	// Namespace starts every Redis key and keeps the caches of services
	// that share a Redis apart: namespace:cache-name:version:key. Letters,
	// digits, '.', '_' and '-'. Required with Redis.
	Namespace string `koanf:"namespace" validate:"omitempty,max=64"`
	// TTL is how long a value stays fresh after it was loaded or set.
	TTL time.Duration `koanf:"ttl" default:"5m" validate:"min=0s"`
	// Jitter shortens each TTL by a random share up to this fraction (0 to
	// 0.5), so entries written together do not expire together.
	Jitter float64 `koanf:"jitter" default:"0.1" validate:"min=0,max=0.5"`
	// NegativeTTL is how long a "not found" from a loader is remembered.
	// Zero turns negative caching off.
	NegativeTTL time.Duration `koanf:"negative_ttl" default:"30s" validate:"min=0s"`
	// Stale is how long after its TTL a value may still be served by
	// GetOrLoad while it is refreshed in the background
	// (stale-while-revalidate). Zero turns it off.
	Stale time.Duration `koanf:"stale" default:"0s" validate:"min=0s"`
	// RefreshTimeout bounds a background refresh, which does not inherit
	// the deadline of the call that started it.
	RefreshTimeout time.Duration `koanf:"refresh_timeout" default:"10s" validate:"min=0s"`
	// LocalMaxEntries bounds the in-process tier of each cache, in entries.
	LocalMaxEntries int `koanf:"local_max_entries" default:"10000" validate:"min=0"`
	// Redis is the shared tier. Without addresses the cache is in-process
	// only.
	Redis RedisConfig `koanf:"redis"`
	// Caches overrides the settings above for the cache of each name.
	Caches map[string]CacheConfig `koanf:"caches"`
}

// CacheConfig overrides, for one cache, the settings of the section. Zero
// fields keep the section's or New's options.
type CacheConfig struct {
	TTL             time.Duration `koanf:"ttl" validate:"min=0s"`
	NegativeTTL     time.Duration `koanf:"negative_ttl" validate:"min=0s"`
	Stale           time.Duration `koanf:"stale" validate:"min=0s"`
	LocalMaxEntries int           `koanf:"local_max_entries" validate:"min=0"`
}

// RedisConfig is the `cache.redis` section.
type RedisConfig struct {
	// Addresses are host:port of the Redis server (standalone, exactly
	// one), of cluster nodes to discover the cluster from, or of the
	// sentinels. Empty means no Redis.
	Addresses []string `koanf:"addresses" validate:"dive,hostname_port"`
	// Mode is standalone (the default), cluster or sentinel.
	Mode string `koanf:"mode" default:"standalone" validate:"omitempty,oneof=standalone cluster sentinel"`
	// MasterSet is the name of the master the sentinels monitor. Required
	// in sentinel mode.
	MasterSet string `koanf:"master_set"`
	// Username and Password authenticate to Redis (and to the sentinels).
	Username string        `koanf:"username"`
	Password config.Secret `koanf:"password"`
	// DB is the database number (standalone and sentinel).
	DB int `koanf:"db" validate:"min=0"`
	// TLS connects with TLS, verifying the server against the system's
	// roots.
	TLS bool `koanf:"tls"`
	// Timeout bounds each Redis call. A read that takes longer falls back
	// to the loader.
	Timeout time.Duration `koanf:"timeout" default:"100ms" validate:"min=0s"`
	// DialTimeout bounds each connection attempt.
	DialTimeout time.Duration `koanf:"dial_timeout" default:"1s" validate:"min=0s"`
	// FailureThreshold is how many failed calls in a row open the circuit
	// breaker, after which calls skip Redis until a probe succeeds.
	FailureThreshold int `koanf:"failure_threshold" default:"5" validate:"min=0"`
	// RetryInterval is how often Redis is probed while the breaker is open.
	RetryInterval time.Duration `koanf:"retry_interval" default:"1s" validate:"min=0s"`
	// MaxPendingWrites bounds the keys whose Set or Delete could not reach
	// Redis and are deleted from it on recovery. Past it, recovery deletes
	// every key of the namespace.
	MaxPendingWrites int `koanf:"max_pending_writes" default:"10000" validate:"min=0"`
	// Outage says what a Redis outage does to readiness: degraded (the
	// default) keeps the service ready, not_ready takes it out of rotation.
	Outage string `koanf:"outage" default:"degraded" validate:"omitempty,oneof=degraded not_ready"`
}

// Enabled reports whether Redis is configured.
func (r RedisConfig) Enabled() bool { return len(r.Addresses) > 0 }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate reports every problem of c, joined, each naming its full key
// ("cache.redis.mode: ..."). All wrap ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: cache.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if c.Namespace != "" && !nameRE.MatchString(c.Namespace) {
		bad("namespace", "%q may hold only letters, digits, '.', '_' and '-'", c.Namespace)
	}
	nonNegative := func(key string, d time.Duration) {
		if d < 0 {
			bad(key, "%s is negative", d)
		}
	}
	nonNegative("ttl", c.TTL)
	nonNegative("negative_ttl", c.NegativeTTL)
	nonNegative("stale", c.Stale)
	nonNegative("refresh_timeout", c.RefreshTimeout)
	if c.Jitter < 0 || c.Jitter > 0.5 {
		bad("jitter", "%v is not between 0 and 0.5", c.Jitter)
	}
	if c.LocalMaxEntries < 0 {
		bad("local_max_entries", "%d is negative", c.LocalMaxEntries)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Caches)) {
		o := c.Caches[name]
		key := "caches." + name
		if !nameRE.MatchString(name) {
			bad(key, "%q is not a cache name (letters, digits, '.', '_' and '-')", name)
		}
		nonNegative(key+".ttl", o.TTL)
		nonNegative(key+".negative_ttl", o.NegativeTTL)
		nonNegative(key+".stale", o.Stale)
		if o.LocalMaxEntries < 0 {
			bad(key+".local_max_entries", "%d is negative", o.LocalMaxEntries)
		}
	}
	r := c.Redis
	for i, a := range r.Addresses {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			bad(fmt.Sprintf("redis.addresses[%d]", i), "%q is not host:port", a)
		}
	}
	switch r.Mode {
	case "", ModeStandalone:
		if len(r.Addresses) > 1 {
			bad("redis.addresses", "standalone mode takes one address, got %d; set redis.mode to cluster or sentinel", len(r.Addresses))
		}
		if r.MasterSet != "" {
			bad("redis.master_set", "only applies to sentinel mode")
		}
	case ModeCluster:
		if r.MasterSet != "" {
			bad("redis.master_set", "only applies to sentinel mode")
		}
		if r.DB != 0 {
			bad("redis.db", "a cluster has only database 0")
		}
	case ModeSentinel:
		if r.MasterSet == "" && r.Enabled() {
			bad("redis.master_set", "is required in sentinel mode")
		}
	default:
		bad("redis.mode", "%q is not standalone, cluster or sentinel", r.Mode)
	}
	if r.Enabled() && c.Namespace == "" {
		bad("namespace", "is required with redis.addresses, so that services sharing a Redis keep apart")
	}
	nonNegative("redis.timeout", r.Timeout)
	nonNegative("redis.dial_timeout", r.DialTimeout)
	nonNegative("redis.retry_interval", r.RetryInterval)
	if r.FailureThreshold < 0 {
		bad("redis.failure_threshold", "%d is negative", r.FailureThreshold)
	}
	if r.MaxPendingWrites < 0 {
		bad("redis.max_pending_writes", "%d is negative", r.MaxPendingWrites)
	}
	if r.DB < 0 {
		bad("redis.db", "%d is negative", r.DB)
	}
	switch r.Outage {
	case "", OutageDegraded, OutageNotReady:
	default:
		bad("redis.outage", "%q is not degraded or not_ready", r.Outage)
	}
	return errors.Join(errs...)
}

// withDefaults returns c with zero fields that have a default set to it.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TTL, DefaultTTL)
	def(&c.RefreshTimeout, DefaultRefreshTimeout)
	if c.LocalMaxEntries == 0 {
		c.LocalMaxEntries = DefaultLocalMaxEntries
	}
	r := &c.Redis
	def(&r.Timeout, DefaultRedisTimeout)
	def(&r.DialTimeout, DefaultDialTimeout)
	def(&r.RetryInterval, DefaultRetryInterval)
	if r.Mode == "" {
		r.Mode = ModeStandalone
	}
	if r.FailureThreshold == 0 {
		r.FailureThreshold = DefaultFailureThreshold
	}
	if r.MaxPendingWrites == 0 {
		r.MaxPendingWrites = DefaultMaxPendingWrites
	}
	if r.Outage == "" {
		r.Outage = OutageDegraded
	}
	return c
}
