package cache

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2/stats"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/loamhq/loam/cache/internal/redistier"
)

// instrumentationScope names the meter and tracer of the package.
const instrumentationScope = "github.com/loamhq/loam/cache"

// Attribute keys. Loam's own are namespaced under loam.cache; the Redis
// spans and durations use the OpenTelemetry database conventions.
const (
	attrName        = attribute.Key("loam.cache.name")
	attrTier        = attribute.Key("loam.cache.tier")
	attrResult      = attribute.Key("loam.cache.result")
	attrLoadResult  = attribute.Key("loam.cache.load.result")
	attrInvalSource = attribute.Key("loam.cache.invalidation.source")
	attrNamespace   = attribute.Key("loam.cache.namespace")
	attrDBSystem    = attribute.Key("db.system.name")
	attrDBOperation = attribute.Key("db.operation.name")
	attrErrorType   = attribute.Key("error.type")
)

// counters are the counts of one cache. The in-process hits and misses use
// otter's striped counter, cheap enough for the hit path; the others are
// counted on paths that already wait for Redis or a loader. The store's
// observable instruments read them.
type counters struct {
	local                                     *stats.Counter
	redisHit, redisMiss, redisErr             atomic.Int64
	loadOK, loadNotFound, loadErr, loadPanic  atomic.Int64
	poisoned, invalidatedRemote, invalidFlush atomic.Int64
}

// instruments of a Store.
type instruments struct {
	tracer        trace.Tracer
	loadDuration  metric.Float64Histogram
	redisDuration metric.Float64Histogram
	requests      metric.Int64ObservableCounter
	loads         metric.Int64ObservableCounter
	poisoned      metric.Int64ObservableCounter
	invalidations metric.Int64ObservableCounter
	entries       metric.Int64ObservableGauge
	available     metric.Int64ObservableGauge
}

func newInstruments(mp metric.MeterProvider, tp trace.TracerProvider) (*instruments, error) {
	m := mp.Meter(instrumentationScope)
	in := &instruments{tracer: tp.Tracer(instrumentationScope)}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	in.loadDuration, err = m.Float64Histogram("loam.cache.load.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of loader calls."))
	add(err)
	in.redisDuration, err = m.Float64Histogram("loam.cache.redis.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of Redis calls of the shared tier."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
	add(err)
	in.requests, err = m.Int64ObservableCounter("loam.cache.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Lookups by tier (local, redis) and result (hit, miss, error)."))
	add(err)
	in.loads, err = m.Int64ObservableCounter("loam.cache.loads", metric.WithUnit("{load}"),
		metric.WithDescription("Loader calls by result (success, not_found, error, panic)."))
	add(err)
	in.poisoned, err = m.Int64ObservableCounter("loam.cache.poisoned", metric.WithUnit("{entry}"),
		metric.WithDescription("Redis entries that could not be decoded, deleted and reloaded."))
	add(err)
	in.invalidations, err = m.Int64ObservableCounter("loam.cache.invalidations", metric.WithUnit("{invalidation}"),
		metric.WithDescription("In-process entries dropped because another process changed them (remote) or because invalidations may have been missed (flush)."))
	add(err)
	in.entries, err = m.Int64ObservableGauge("loam.cache.local.entries", metric.WithUnit("{entry}"),
		metric.WithDescription("Approximate number of entries in the in-process tier."))
	add(err)
	in.available, err = m.Int64ObservableGauge("loam.cache.redis.available",
		metric.WithDescription("1 while the shared tier is in use, 0 while Redis is unavailable."))
	add(err)
	return in, errors.Join(errs...)
}

// attrSets are the attribute sets of one cache, built once.
type attrSets struct {
	name                               metric.MeasurementOption
	localHit, localMiss                metric.MeasurementOption
	redisHit, redisMiss, redisErr      metric.MeasurementOption
	loadOK, loadNotFound, loadErr      metric.MeasurementOption
	loadPanic, invalRemote, invalFlush metric.MeasurementOption
	redisOps                           map[string]metric.MeasurementOption
}

func newAttrSets(name string) attrSets {
	n := attrName.String(name)
	set := func(kvs ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append([]attribute.KeyValue{n}, kvs...)...))
	}
	a := attrSets{
		name:         set(),
		localHit:     set(attrTier.String("local"), attrResult.String("hit")),
		localMiss:    set(attrTier.String("local"), attrResult.String("miss")),
		redisHit:     set(attrTier.String("redis"), attrResult.String("hit")),
		redisMiss:    set(attrTier.String("redis"), attrResult.String("miss")),
		redisErr:     set(attrTier.String("redis"), attrResult.String("error")),
		loadOK:       set(attrLoadResult.String("success")),
		loadNotFound: set(attrLoadResult.String("not_found")),
		loadErr:      set(attrLoadResult.String("error")),
		loadPanic:    set(attrLoadResult.String("panic")),
		invalRemote:  set(attrInvalSource.String("remote")),
		invalFlush:   set(attrInvalSource.String("flush")),
		redisOps:     map[string]metric.MeasurementOption{},
	}
	for _, op := range []string{"GET", "SET", "DEL"} {
		a.redisOps[op] = set(attrDBSystem.String("redis"), attrDBOperation.String(op))
	}
	return a
}

// observe reports the counts of one cache.
func (in *instruments) observe(o metric.Observer, c *counters, a *attrSets, entries int) {
	s := c.local.Snapshot()
	o.ObserveInt64(in.requests, int64(s.Hits), a.localHit)
	o.ObserveInt64(in.requests, int64(s.Misses), a.localMiss)
	o.ObserveInt64(in.requests, c.redisHit.Load(), a.redisHit)
	o.ObserveInt64(in.requests, c.redisMiss.Load(), a.redisMiss)
	o.ObserveInt64(in.requests, c.redisErr.Load(), a.redisErr)
	o.ObserveInt64(in.loads, c.loadOK.Load(), a.loadOK)
	o.ObserveInt64(in.loads, c.loadNotFound.Load(), a.loadNotFound)
	o.ObserveInt64(in.loads, c.loadErr.Load(), a.loadErr)
	o.ObserveInt64(in.loads, c.loadPanic.Load(), a.loadPanic)
	o.ObserveInt64(in.poisoned, c.poisoned.Load(), a.name)
	o.ObserveInt64(in.invalidations, c.invalidatedRemote.Load(), a.invalRemote)
	o.ObserveInt64(in.invalidations, c.invalidFlush.Load(), a.invalFlush)
	o.ObserveInt64(in.entries, int64(entries), a.name)
}

// redisCall traces and measures one call of the shared tier.
func (in *instruments) redisCall(ctx context.Context, cacheName string, a *attrSets, op string, call func(ctx context.Context) error) error {
	ctx, span := in.tracer.Start(ctx, op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrDBSystem.String("redis"), attrDBOperation.String(op), attrName.String(cacheName)))
	start := time.Now()
	err := call(ctx)
	elapsed := time.Since(start).Seconds()
	switch {
	case err == nil || errors.Is(err, redistier.ErrMiss):
		in.redisDuration.Record(ctx, elapsed, a.redisOps[op])
	default:
		etype := "redis"
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			etype = "timeout"
		case errors.Is(err, redistier.ErrUnavailable):
			etype = "unavailable"
		}
		in.redisDuration.Record(ctx, elapsed, metric.WithAttributes(attrName.String(cacheName),
			attrDBSystem.String("redis"), attrDBOperation.String(op), attrErrorType.String(etype)))
		span.RecordError(err)
		span.SetStatus(codes.Error, etype)
	}
	span.End()
	return err
}
