package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/maypok86/otter/v2/stats"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/loamhq/loam/cache/internal/redistier"
	"github.com/loamhq/loam/cache/internal/wire"
)

// Option tunes one cache in code; New reads it. The cache's entry under
// cache.caches in the configuration overrides it, so operators can tune a
// cache without a release.
type Option interface{ apply(*cacheOptions) }

type optionFunc func(*cacheOptions)

func (f optionFunc) apply(o *cacheOptions) { f(o) }

type cacheOptions struct {
	ttl, negativeTTL, stale *time.Duration
	localMaxEntries         int
	version                 string
	codec                   any
}

// WithTTL sets how long a value stays fresh (cache.ttl by default).
func WithTTL(d time.Duration) Option {
	return optionFunc(func(o *cacheOptions) { o.ttl = &d })
}

// WithNegativeTTL sets how long a loader's ErrNotFound is remembered
// (cache.negative_ttl by default). Zero turns negative caching off.
func WithNegativeTTL(d time.Duration) Option {
	return optionFunc(func(o *cacheOptions) { o.negativeTTL = &d })
}

// WithStale lets GetOrLoad serve a value for up to d after its TTL while it
// refreshes it in the background (cache.stale by default).
func WithStale(d time.Duration) Option {
	return optionFunc(func(o *cacheOptions) { o.stale = &d })
}

// WithLocalMaxEntries bounds the in-process tier, in entries
// (cache.local_max_entries by default).
func WithLocalMaxEntries(n int) Option {
	return optionFunc(func(o *cacheOptions) { o.localMaxEntries = n })
}

// WithVersion sets the explicit part of the version in the cache's Redis
// keys ("1" by default). Change it when the meaning of the values changes
// although their type does not; changes of the type (or, for protobuf
// values, of the message's schema) change the keys by themselves.
func WithVersion(v string) Option {
	return optionFunc(func(o *cacheOptions) { o.version = v })
}

// WithCodec sets how values are encoded in Redis. Its type parameter must
// be the cache's value type; New fails otherwise.
func WithCodec[V any](c Codec[V]) Option {
	return optionFunc(func(o *cacheOptions) { o.codec = c })
}

// entry is a value of the in-process tier: a value, or a remembered "not
// found", with the time its freshness ends.
type entry[V any] struct {
	value      V
	freshUntil int64 // Unix nanoseconds
	notFound   bool
}

func (e entry[V]) result() (V, error) {
	if e.notFound {
		var zero V
		return zero, ErrNotFound
	}
	return e.value, nil
}

// Cache is a typed cache of values V by keys K, in two tiers: an otter
// cache in the process, in front of the Store's Redis when it has one.
// Make it with New; it lives as long as its Store. A Cache is safe for
// concurrent use.
type Cache[K Key, V any] struct {
	s       *Store
	name    string
	version string
	prefix  string // namespace:name:version:
	local   *otter.Cache[K, entry[V]]
	codec   Codec[V]

	ttl, negativeTTL, stale, refreshTimeout time.Duration
	jitter                                  float64

	// counting turns on the count of in-process hits, the one count on
	// the hit path, when metrics are first collected (observe): with no
	// reader installed, a hit costs what an otter hit costs.
	counting  atomic.Bool
	cnt       counters
	attrs     attrSets
	fromRedis redisLoader[K, V]
}

// New makes the cache called name in s. The name (letters, digits, '.',
// '_' and '-') is unique in the Store and part of the Redis keys:
// namespace:name:version:key, where version is WithVersion's ("1" by
// default) followed by a fingerprint of the value type's schema when the
// codec is a built-in one (the protobuf message descriptors, or the Go
// type as encoding/json sees it), so a schema change never reads old
// bytes.
//
// Settings come from the Store's Config, then opts, then the
// configuration's cache.caches entry for name. New fails with
// ErrInvalidConfig on a bad name or setting, or when no codec fits V.
func New[K Key, V any](s *Store, name string, opts ...Option) (*Cache[K, V], error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil Store", ErrInvalidConfig)
	}
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("%w: cache name %q may hold only letters, digits, '.', '_' and '-'", ErrInvalidConfig, name)
	}
	var o cacheOptions
	for _, opt := range opts {
		opt.apply(&o)
	}
	cfg := s.cfg
	c := &Cache[K, V]{
		s: s, name: name,
		ttl: cfg.TTL, negativeTTL: cfg.NegativeTTL, stale: cfg.Stale,
		refreshTimeout: cfg.RefreshTimeout, jitter: cfg.Jitter,
	}
	localMax := cfg.LocalMaxEntries
	set := func(dst *time.Duration, opt *time.Duration, override time.Duration) {
		if opt != nil {
			*dst = *opt
		}
		if override > 0 {
			*dst = override
		}
	}
	ov := cfg.Caches[name]
	set(&c.ttl, o.ttl, ov.TTL)
	set(&c.negativeTTL, o.negativeTTL, ov.NegativeTTL)
	set(&c.stale, o.stale, ov.Stale)
	if o.localMaxEntries != 0 {
		localMax = o.localMaxEntries
	}
	if ov.LocalMaxEntries > 0 {
		localMax = ov.LocalMaxEntries
	}
	switch {
	case c.ttl <= 0:
		return nil, fmt.Errorf("%w: cache %q: ttl %v is not positive", ErrInvalidConfig, name, c.ttl)
	case c.negativeTTL < 0 || c.stale < 0:
		return nil, fmt.Errorf("%w: cache %q: negative_ttl and stale must not be negative", ErrInvalidConfig, name)
	case localMax <= 0:
		return nil, fmt.Errorf("%w: cache %q: local_max_entries %d is not positive", ErrInvalidConfig, name, localMax)
	}

	var fingerprint string
	if o.codec != nil {
		codec, ok := o.codec.(Codec[V])
		if !ok {
			return nil, fmt.Errorf("%w: cache %q: WithCodec got a %T, not a Codec[%v]", ErrInvalidConfig, name, o.codec, reflect.TypeFor[V]())
		}
		c.codec = codec
	} else {
		var err error
		if c.codec, fingerprint, err = defaultCodec[V](); err != nil {
			return nil, fmt.Errorf("cache %q: %w", name, err)
		}
	}
	c.version = "1"
	if o.version != "" {
		if !nameRE.MatchString(o.version) {
			return nil, fmt.Errorf("%w: cache %q: version %q may hold only letters, digits, '.', '_' and '-'", ErrInvalidConfig, name, o.version)
		}
		c.version = o.version
	}
	if fingerprint != "" {
		sum := sha256.Sum256([]byte(fingerprint))
		c.version += "-" + hex.EncodeToString(sum[:4])
	}
	c.prefix = cfg.Namespace + ":" + name + ":" + c.version + ":"
	c.cnt.local = stats.NewCounter()
	c.attrs = newAttrSets(name)
	c.fromRedis = redisLoader[K, V]{c}

	oo := &otter.Options[K, entry[V]]{
		MaximumSize:      localMax,
		ExpiryCalculator: otter.ExpiryWritingFunc(c.expiresAfter),
		Logger:           otterLogger{s.logger.With("cache", name)},
	}
	if c.stale > 0 {
		oo.RefreshCalculator = refreshCalculator[K, V]{c}
	}
	local, err := otter.New(oo)
	if err != nil {
		return nil, fmt.Errorf("%w: cache %q: %w", ErrInvalidConfig, name, err)
	}
	c.local = local
	if err := s.register(name, c); err != nil {
		local.StopAllGoroutines()
		return nil, err
	}
	return c, nil
}

// Get returns the value of key from the process, else from Redis. It
// returns ErrMiss when neither tier holds the key, ErrNotFound when a
// loader's "not found" is remembered for it, ErrClosed after Store.Close,
// or ctx's error. It never fails because Redis is down: that is a miss. A
// value served by Get may be stale by up to the cache's stale setting;
// only GetOrLoad refreshes it.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	if e, ok := c.local.GetIfPresent(key); ok {
		if c.counting.Load() {
			c.cnt.local.RecordHits(1)
		}
		return e.result()
	}
	return c.getSlow(ctx, key)
}

func (c *Cache[K, V]) getSlow(ctx context.Context, key K) (V, error) {
	var zero V
	c.cnt.local.RecordMisses(1)
	if c.s.closed.Load() {
		return zero, ErrClosed
	}
	if c.s.tier == nil {
		return zero, ErrMiss
	}
	// Through otter's loading, so that concurrent reads of the key share
	// one Redis call and an invalidation during the call discards its
	// result.
	e, err := c.local.Get(ctx, key, c.fromRedis)
	switch {
	case err == nil:
		return e.result()
	case ctx.Err() != nil:
		return zero, ctx.Err()
	case errors.Is(err, ErrNotFound):
		return zero, ErrNotFound
	}
	return zero, ErrMiss
}

// GetOrLoad returns the value of key from the process, else from Redis,
// else from loader, and caches what loader returns in both tiers. A loader
// that returns ErrNotFound has that answer remembered for the negative TTL.
//
// Concurrent calls for a key that the process does not hold run one load
// (one Redis read, and at most one loader call), and share its result. A
// caller whose ctx ends stops waiting with ctx's error, unwrapped; the
// others keep waiting, and if the load failed because of the context of
// the caller that ran it, one of them loads again. A loader that panics
// fails the load with an error wrapping ErrLoaderPanic, for the caller and
// its waiters alike, and the key is free to load again. Other errors of
// loader are returned as they are and not cached.
//
// When Redis is down, GetOrLoad calls loader after at most
// cache.redis.timeout, or at once while the circuit breaker is open, and
// keeps the value in the process: a request never fails because of Redis.
//
// With a stale setting, a value past its TTL is returned at once while one
// background call refreshes it (bounded by cache.refresh_timeout and
// detached from ctx); a value past its TTL plus stale is loaded again. A
// failed refresh keeps the value and is retried a second later.
//
// Every loader of a key should compute the same value: a caller may get
// the result of another caller's loader.
func (c *Cache[K, V]) GetOrLoad(ctx context.Context, key K, loader func(ctx context.Context, key K) (V, error)) (V, error) {
	if c.stale == 0 {
		if e, ok := c.local.GetIfPresent(key); ok {
			if c.counting.Load() {
				c.cnt.local.RecordHits(1)
			}
			return e.result()
		}
	} else if e, ok := c.local.GetEntry(key); ok {
		c.cnt.local.RecordHits(1)
		if e.RefreshableAtNano > e.SnapshotAtNano {
			return e.Value.result()
		}
		return c.loadSlow(ctx, key, loader) // serves the stale value and starts the refresh
	}
	c.cnt.local.RecordMisses(1)
	return c.loadSlow(ctx, key, loader)
}

func (c *Cache[K, V]) loadSlow(ctx context.Context, key K, loader func(ctx context.Context, key K) (V, error)) (V, error) {
	var zero V
	if c.s.closed.Load() {
		return zero, ErrClosed
	}
	if loader == nil {
		return zero, fmt.Errorf("%w: cache %q: nil loader", ErrInvalidConfig, c.name)
	}
	l := &userLoader[K, V]{c: c, fn: loader}
	for range 3 {
		e, err := c.local.Get(ctx, key, l)
		if errors.Is(err, otter.ErrNotFound) {
			continue // joined a Get that found nothing in Redis: load for real
		}
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return zero, ctxErr
			}
			return zero, err
		}
		return e.result()
	}
	e, err := l.Load(ctx, key) // three Gets in a row: load without sharing
	if err != nil {
		return zero, err
	}
	return e.result()
}

// Set stores value under key in the process and in Redis, fresh for the
// TTL, and makes the other processes drop their copies. A value the codec
// cannot encode fails Set and changes nothing.
//
// The Redis write is best effort: when Redis is down Set still succeeds,
// the value stays in this process, and the key is deleted from Redis once
// it is back, so that no process reads an older value from it; the other
// processes drop what they copied from Redis when they reconnect. Set
// returns ErrClosed after Store.Close, and ctx's error if ctx ended first
// (the value is then in this process, and may or may not be in Redis).
func (c *Cache[K, V]) Set(ctx context.Context, key K, value V) error {
	if c.s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e := entry[V]{value: value, freshUntil: c.freshUntil(time.Now(), c.ttl)}
	if c.s.tier == nil {
		c.local.Set(key, e)
		return nil
	}
	b, err := c.encode(e)
	if err != nil {
		return fmt.Errorf("cache %q: encoding the value of key %v: %w", c.name, key, err)
	}
	c.local.Set(key, e)
	return c.writeThrough(ctx, c.redisKey(key), "SET", func(ctx context.Context, rkey string) error {
		return c.s.tier.Set(ctx, rkey, b, time.Until(time.Unix(0, e.freshUntil)), false)
	})
}

// Delete removes key from the process and from Redis, and makes the other
// processes drop their copies. Like Set, the Redis part is best effort and
// replayed when Redis is back. Delete returns ErrClosed after Store.Close,
// and ctx's error if ctx ended first.
func (c *Cache[K, V]) Delete(ctx context.Context, key K) error {
	if c.s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.local.Invalidate(key)
	if c.s.tier == nil {
		return nil
	}
	return c.writeThrough(ctx, c.redisKey(key), "DEL", func(ctx context.Context, rkey string) error {
		return c.s.tier.Del(ctx, rkey)
	})
}

// writeThrough makes a write of Set or Delete in Redis, and keeps the key
// for deletion on recovery when the write may not have happened.
func (c *Cache[K, V]) writeThrough(ctx context.Context, rkey, op string, write func(ctx context.Context, rkey string) error) error {
	var err error
	if c.s.tier.Available() {
		err = c.s.in.redisCall(ctx, c.name, &c.attrs, op, func(ctx context.Context) error { return write(ctx, rkey) })
	} else {
		err = redistier.ErrUnavailable
	}
	if err == nil {
		return nil
	}
	c.s.tier.Remember(rkey)
	return ctx.Err()
}

// load reads key from Redis, else calls fn, and writes fn's answer to
// Redis. It runs inside otter's loading, once per key at a time.
func (c *Cache[K, V]) load(ctx context.Context, key K, fn func(ctx context.Context, key K) (V, error)) (entry[V], error) {
	var rkey string
	overwrite := false
	if c.s.tier != nil {
		rkey = c.redisKey(key)
		e, found, poisoned := c.readRedis(ctx, rkey)
		if found {
			return e, nil
		}
		if err := ctx.Err(); err != nil {
			return entry[V]{}, err
		}
		overwrite = poisoned
	}
	v, err := c.callLoader(ctx, key, fn)
	var e entry[V]
	switch {
	case errors.Is(err, ErrNotFound) && c.negativeTTL > 0:
		e = entry[V]{notFound: true, freshUntil: c.freshUntil(time.Now(), c.negativeTTL)}
	case err != nil:
		return entry[V]{}, err
	default:
		e = entry[V]{value: v, freshUntil: c.freshUntil(time.Now(), c.ttl)}
	}
	if c.s.tier != nil && c.s.tier.Available() {
		c.populate(ctx, rkey, e, overwrite)
	}
	return e, nil
}

// populate writes a loaded entry to Redis unless the key has a value
// there already (a Set that raced with the load wins), or, after a
// poisoned entry, over it. Failures are only counted: the next process to
// miss loads again.
func (c *Cache[K, V]) populate(ctx context.Context, rkey string, e entry[V], overwrite bool) {
	b, err := c.encode(e)
	if err != nil {
		c.s.logger.ErrorContext(ctx, "cache: value cannot be encoded; kept in the process only", "cache", c.name, "error", err)
		return
	}
	ttl := time.Until(time.Unix(0, e.freshUntil))
	if ttl <= 0 {
		return
	}
	_ = c.s.in.redisCall(ctx, c.name, &c.attrs, "SET", func(ctx context.Context) error {
		return c.s.tier.Set(ctx, rkey, b, ttl, !overwrite)
	})
}

// readRedis reads rkey from Redis. found is false on a miss, when Redis is
// unavailable, and on a poisoned entry, which it deletes.
func (c *Cache[K, V]) readRedis(ctx context.Context, rkey string) (e entry[V], found, poisoned bool) {
	if !c.s.tier.Available() {
		c.cnt.redisErr.Add(1)
		return e, false, false
	}
	var b []byte
	err := c.s.in.redisCall(ctx, c.name, &c.attrs, "GET", func(ctx context.Context) (err error) {
		b, err = c.s.tier.Get(ctx, rkey)
		return err
	})
	switch {
	case errors.Is(err, redistier.ErrMiss):
		c.cnt.redisMiss.Add(1)
		return e, false, false
	case err != nil:
		c.cnt.redisErr.Add(1)
		return e, false, false
	}
	e, err = c.decode(b)
	if err != nil {
		c.cnt.poisoned.Add(1)
		c.s.logger.WarnContext(ctx, "cache: deleting a Redis entry that cannot be decoded", "cache", c.name, "key", rkey, "error", err)
		_ = c.s.in.redisCall(ctx, c.name, &c.attrs, "DEL", func(ctx context.Context) error { return c.s.tier.Del(ctx, rkey) })
		return entry[V]{}, false, true
	}
	c.cnt.redisHit.Add(1)
	return e, true, false
}

// callLoader calls fn in a span, measures it, and turns a panic into an
// error wrapping ErrLoaderPanic.
func (c *Cache[K, V]) callLoader(ctx context.Context, key K, fn func(ctx context.Context, key K) (V, error)) (v V, err error) {
	ctx, span := c.s.in.tracer.Start(ctx, "cache.load", trace.WithAttributes(attrName.String(c.name)))
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrLoaderPanic, r)
			stack := string(debug.Stack())
			c.cnt.loadPanic.Add(1)
			c.s.logger.ErrorContext(ctx, "cache: loader panicked", "cache", c.name, "panic", fmt.Sprint(r), "stack", stack)
			span.RecordError(err, trace.WithAttributes(attribute.String("exception.stacktrace", stack)))
			span.SetStatus(codes.Error, "loader panicked")
		}
		c.s.in.loadDuration.Record(ctx, time.Since(start).Seconds(), c.attrs.name)
		span.End()
	}()
	v, err = fn(ctx, key)
	switch {
	case err == nil:
		c.cnt.loadOK.Add(1)
	case errors.Is(err, ErrNotFound):
		c.cnt.loadNotFound.Add(1)
	default:
		c.cnt.loadErr.Add(1)
		span.RecordError(err)
		span.SetStatus(codes.Error, "loader failed")
	}
	return v, err
}

func (c *Cache[K, V]) encode(e entry[V]) ([]byte, error) {
	kind := wire.KindValue
	if e.notFound {
		kind = wire.KindNotFound
	}
	b := wire.Append(make([]byte, 0, 64), kind, time.Unix(0, e.freshUntil))
	if e.notFound {
		return b, nil
	}
	return c.codec.Encode(b, e.value)
}

// decode reads an entry written by encode; a codec that panics on foreign
// bytes fails it like one that returns an error.
func (c *Cache[K, V]) decode(b []byte) (e entry[V], err error) {
	h, payload, err := wire.Parse(b)
	if err != nil {
		return e, err
	}
	e.freshUntil = h.FreshUntil.UnixNano()
	if h.Kind == wire.KindNotFound {
		e.notFound = true
		return e, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("codec panicked: %v", r)
		}
	}()
	e.value, err = c.codec.Decode(payload)
	return e, err
}

func (c *Cache[K, V]) redisKey(k K) string {
	b := make([]byte, 0, len(c.prefix)+24)
	b = append(b, c.prefix...)
	return string(appendKey(b, k))
}

// freshUntil returns when an entry written at now with ttl stops being
// fresh: ttl shortened by up to the jitter.
func (c *Cache[K, V]) freshUntil(now time.Time, ttl time.Duration) int64 {
	if c.jitter > 0 {
		ttl -= time.Duration(rand.Float64() * c.jitter * float64(ttl))
	}
	return now.Add(ttl).UnixNano()
}

// expiresAfter is the in-process lifetime of an entry: its freshness, and
// the stale window for values.
func (c *Cache[K, V]) expiresAfter(e otter.Entry[K, entry[V]]) time.Duration {
	d := time.Duration(e.Value.freshUntil - time.Now().UnixNano())
	if !e.Value.notFound {
		d += c.stale
	}
	return max(d, time.Millisecond)
}

// invalidate drops key, in text form, if it has this cache's version.
func (c *Cache[K, V]) invalidate(version, key string) {
	if version != c.version {
		return
	}
	if k, ok := parseKey[K](key); ok {
		if _, dropped := c.local.Invalidate(k); dropped {
			c.cnt.invalidatedRemote.Add(1)
		}
	}
}

func (c *Cache[K, V]) flush() {
	c.local.InvalidateAll()
	c.cnt.invalidFlush.Add(1)
}

func (c *Cache[K, V]) stop() {
	c.local.InvalidateAll()
	c.local.StopAllGoroutines()
}

func (c *Cache[K, V]) observe(o metric.Observer) {
	c.counting.Store(true)
	c.s.in.observe(o, &c.cnt, &c.attrs, c.local.EstimatedSize())
}

// userLoader runs a GetOrLoad's loader inside otter's loading.
type userLoader[K Key, V any] struct {
	c  *Cache[K, V]
	fn func(ctx context.Context, key K) (V, error)
}

func (l *userLoader[K, V]) Load(ctx context.Context, key K) (entry[V], error) {
	return l.c.load(ctx, key, l.fn)
}

// Reload refreshes a stale value; otter detaches ctx from the request.
func (l *userLoader[K, V]) Reload(ctx context.Context, key K, _ entry[V]) (entry[V], error) {
	ctx, cancel := context.WithTimeout(ctx, l.c.refreshTimeout)
	defer cancel()
	return l.c.load(ctx, key, l.fn)
}

// redisLoader is the loader of Get: the shared tier only.
type redisLoader[K Key, V any] struct{ c *Cache[K, V] }

// errNoFresher keeps the value a refresh through Redis could not replace.
var errNoFresher = errors.New("redis holds no fresher value")

func (l redisLoader[K, V]) Load(ctx context.Context, key K) (entry[V], error) {
	if e, found, _ := l.c.readRedis(ctx, l.c.redisKey(key)); found {
		return e, nil
	}
	return entry[V]{}, otter.ErrNotFound
}

func (l redisLoader[K, V]) Reload(ctx context.Context, key K, _ entry[V]) (entry[V], error) {
	if e, found, _ := l.c.readRedis(ctx, l.c.redisKey(key)); found {
		return e, nil
	}
	return entry[V]{}, errNoFresher
}

// refreshCalculator makes values refreshable when their freshness ends;
// remembered "not found" answers are never refreshed, only expire.
type refreshCalculator[K Key, V any] struct{ c *Cache[K, V] }

func (r refreshCalculator[K, V]) after(e entry[V]) time.Duration {
	d := time.Duration(e.freshUntil - time.Now().UnixNano())
	if e.notFound {
		return d + time.Hour
	}
	return d
}

func (r refreshCalculator[K, V]) RefreshAfterCreate(e otter.Entry[K, entry[V]]) time.Duration {
	return r.after(e.Value)
}

func (r refreshCalculator[K, V]) RefreshAfterUpdate(e otter.Entry[K, entry[V]], _ entry[V]) time.Duration {
	return r.after(e.Value)
}

func (r refreshCalculator[K, V]) RefreshAfterReload(e otter.Entry[K, entry[V]], _ entry[V]) time.Duration {
	return r.after(e.Value)
}

// RefreshAfterReloadFailure retries a failed refresh a second later, so a
// failing source is not called on every read.
func (r refreshCalculator[K, V]) RefreshAfterReloadFailure(otter.Entry[K, entry[V]], error) time.Duration {
	return time.Second
}

// otterLogger passes otter's reports (failed background refreshes) to
// slog.
type otterLogger struct{ l *slog.Logger }

func (o otterLogger) Warn(ctx context.Context, msg string, err error) {
	o.l.WarnContext(ctx, "cache: "+msg, "error", err)
}

func (o otterLogger) Error(ctx context.Context, msg string, err error) {
	if errors.Is(err, errNoFresher) {
		return
	}
	o.l.WarnContext(ctx, "cache: "+msg, "error", err)
}
