package cache

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/loamhq/loam/cache/internal/redistier"
)

// StoreOption carries what a configuration file cannot: telemetry
// providers and the logger. Options are read by Open.
type StoreOption interface{ applyStore(*storeOptions) }

type storeOptionFunc func(*storeOptions)

func (f storeOptionFunc) applyStore(o *storeOptions) { f(o) }

type storeOptions struct {
	logger *slog.Logger
	meters metric.MeterProvider
	traces trace.TracerProvider
}

// WithLogger sets the logger of Redis state changes, poisoned entries and
// failed background refreshes. The default is slog.Default(); nil keeps it.
func WithLogger(l *slog.Logger) StoreOption {
	return storeOptionFunc(func(o *storeOptions) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithMeterProvider sets where the loam.cache.* metrics go. The default is
// otel.GetMeterProvider(), a no-op until the application installs one; nil
// keeps it.
func WithMeterProvider(mp metric.MeterProvider) StoreOption {
	return storeOptionFunc(func(o *storeOptions) {
		if mp != nil {
			o.meters = mp
		}
	})
}

// WithTracerProvider sets where the spans of Redis and loader calls go. The
// default is otel.GetTracerProvider(), a no-op until the application
// installs one; nil keeps it.
func WithTracerProvider(tp trace.TracerProvider) StoreOption {
	return storeOptionFunc(func(o *storeOptions) {
		if tp != nil {
			o.traces = tp
		}
	})
}

// member is what a Store sees of each of its caches.
type member interface {
	invalidate(version, key string)
	flush()
	stop()
	observe(o metric.Observer)
}

// Store is the backend that a process's caches share: the Redis client,
// its circuit breaker and invalidation stream, and the metrics. Open one
// per process and make every Cache from it with New. A Store is safe for
// concurrent use.
type Store struct {
	cfg    Config
	prefix string // "namespace:"
	tier   *redistier.Tier
	in     *instruments
	logger *slog.Logger
	reg    metric.Registration

	mu      sync.RWMutex
	members map[string]member // by cache name

	closed atomic.Bool
}

// Open validates cfg and opens a Store. With cfg.Redis.Addresses it
// connects to Redis; when Redis cannot be reached the Store opens all the
// same, degraded (Check says so), and connects in the background. Open
// fails on an invalid configuration and on answers of Redis that retrying
// cannot change: a refused password, or a server without RESP3 client
// tracking (Redis before 6).
//
// The caller closes the Store. Connecting is bounded by
// cache.redis.dial_timeout; ctx is checked first.
func Open(ctx context.Context, cfg Config, opts ...StoreOption) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := storeOptions{logger: slog.Default(), meters: otel.GetMeterProvider(), traces: otel.GetTracerProvider()}
	for _, opt := range opts {
		opt.applyStore(&o)
	}
	cfg = cfg.withDefaults()
	in, err := newInstruments(o.meters, o.traces)
	if err != nil {
		return nil, fmt.Errorf("cache: creating instruments: %w", err)
	}
	s := &Store{cfg: cfg, prefix: cfg.Namespace + ":", in: in, logger: o.logger, members: map[string]member{}}
	if cfg.Redis.Enabled() {
		r := cfg.Redis
		s.tier, err = redistier.New(redistier.Options{
			Client:           clientOption(r),
			Prefix:           s.prefix,
			Timeout:          r.Timeout,
			FailureThreshold: r.FailureThreshold,
			RetryInterval:    r.RetryInterval,
			MaxPending:       r.MaxPendingWrites,
			OnInvalidate:     s.onInvalidate,
			OnFlush:          s.flush,
			Logger:           o.logger.With("cache.namespace", cfg.Namespace),
		})
		if err != nil {
			return nil, fmt.Errorf("cache: connecting to redis %s: %w", strings.Join(r.Addresses, ","), err)
		}
	}
	s.reg, err = o.meters.Meter(instrumentationScope).RegisterCallback(s.observe,
		in.requests, in.loads, in.poisoned, in.invalidations, in.entries, in.available)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("cache: registering metrics: %w", err)
	}
	return s, nil
}

// clientOption turns the redis section into rueidis options.
func clientOption(r RedisConfig) rueidis.ClientOption {
	opt := rueidis.ClientOption{
		InitAddress:       r.Addresses,
		Username:          r.Username,
		Password:          r.Password.Reveal(),
		SelectDB:          r.DB,
		ClientName:        "loam-cache",
		Dialer:            net.Dialer{Timeout: r.DialTimeout, KeepAlive: rueidis.DefaultTCPKeepAlive},
		ConnWriteTimeout:  max(10*r.Timeout, 2*r.DialTimeout),
		ForceSingleClient: r.Mode == ModeStandalone,
	}
	if r.TLS {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if r.Mode == ModeSentinel {
		opt.Sentinel = rueidis.SentinelOption{
			MasterSet:               r.MasterSet,
			Username:                r.Username,
			Password:                r.Password.Reveal(),
			Dialer:                  opt.Dialer,
			TLSConfig:               opt.TLSConfig,
			TopologyRefreshInterval: 5 * r.RetryInterval,
		}
	}
	return opt
}

// register adds a cache under name.
func (s *Store) register(name string, m member) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if _, dup := s.members[name]; dup {
		return fmt.Errorf("%w: a cache named %q exists in this store", ErrInvalidConfig, name)
	}
	s.members[name] = m
	return nil
}

// onInvalidate drops the entry of a Redis key that another process
// changed: namespace:name:version:key.
func (s *Store) onInvalidate(redisKey string) {
	rest, ok := strings.CutPrefix(redisKey, s.prefix)
	if !ok {
		return
	}
	name, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return
	}
	version, key, ok := strings.Cut(rest, ":")
	if !ok {
		return
	}
	s.mu.RLock()
	m := s.members[name]
	s.mu.RUnlock()
	if m != nil {
		m.invalidate(version, key)
	}
}

// flush drops every in-process entry of every cache.
func (s *Store) flush() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, m := range s.members {
		m.flush()
	}
}

func (s *Store) observe(_ context.Context, o metric.Observer) error {
	up := int64(1)
	if s.tier != nil && !s.tier.Available() {
		up = 0
	}
	if s.tier != nil {
		o.ObserveInt64(s.in.available, up, metric.WithAttributes(attrNamespace.String(s.cfg.Namespace)))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, m := range s.members {
		m.observe(o)
	}
	return nil
}

// Check reports whether the Store can do its work, for a readiness probe.
// It returns nil when Redis answers, or when no Redis is configured. While
// Redis is unavailable (unreachable, timing out, or the circuit breaker
// open) it returns an *OutageError, whose Degraded method says whether the
// configuration treats the outage as degraded (the default) or not ready.
// After Close it returns ErrClosed; when ctx ends first, ctx's error.
//
// Check sends a PING when the breaker is closed, so probes see an outage
// even while no request uses the cache.
func (s *Store) Check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.tier == nil {
		return nil
	}
	err := s.tier.Check(ctx)
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return &OutageError{cause: err, degraded: s.cfg.Redis.Outage != OutageNotReady}
}

// Close closes the Redis client and stops the caches of the Store; their
// in-process entries are dropped. Calls on the Store and its caches
// return ErrClosed afterwards. Writes that an outage kept from Redis and
// that were not replayed yet are dropped: Redis expires them by their
// TTL. Close is idempotent and returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	members := s.members
	s.mu.Unlock()
	if s.reg != nil {
		_ = s.reg.Unregister()
	}
	if s.tier != nil {
		s.tier.Close()
	}
	for _, m := range members {
		m.stop()
	}
	return nil
}
