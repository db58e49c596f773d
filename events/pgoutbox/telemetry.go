package pgoutbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

const instrumentationName = "github.com/loamhq/loam/events/pgoutbox"

// delayBuckets are the boundaries, in seconds, of the relay delay: from
// milliseconds when the relay keeps up to minutes when the broker was
// away.
var delayBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// Attribute keys of the outbox's own.
const (
	attrTable = attribute.Key("loam.events.outbox.table")
	attrStep  = attribute.Key("loam.events.outbox.step")
)

// Steps of the relay that can fail, the values of attrStep.
const (
	stepSend     = "send"     // sending through the wrapped broker
	stepDatabase = "database" // reading, marking, connecting, locking
)

// instruments are a Broker's tracer and metric instruments.
type instruments struct {
	tracer  trace.Tracer
	tracing bool // the tracer provider may record, so links are worth building
	table   attribute.KeyValue
	system  attribute.KeyValue
	relayed metric.Int64Counter
	delay   metric.Float64Histogram
	failed  metric.Int64Counter
	reg     metric.Registration
}

func newInstruments(o options, table string, system string, r *relay) (*instruments, error) {
	_, noop := o.tracers.(tracenoop.TracerProvider)
	in := &instruments{
		tracer:  o.tracers.Tracer(instrumentationName),
		tracing: !noop,
		table:   attrTable.String(table),
		system:  semconv.MessagingSystemKey.String(system),
	}
	m := o.meters.Meter(instrumentationName)
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	in.relayed, err = m.Int64Counter("loam.events.outbox.relayed", metric.WithUnit("{event}"),
		metric.WithDescription("Number of events the wrapped broker accepted from the relay, sends of the same event again included."))
	add(err)
	in.delay, err = m.Float64Histogram("loam.events.outbox.delay", metric.WithUnit("s"),
		metric.WithDescription("Time from an event's insertion in the outbox to the broker's acceptance of it."),
		metric.WithExplicitBucketBoundaries(delayBuckets...))
	add(err)
	in.failed, err = m.Int64Counter("loam.events.outbox.failures", metric.WithUnit("{failure}"),
		metric.WithDescription("Number of failed relay steps (loam.events.outbox.step: send or database), each retried with backoff."))
	add(err)
	pending, err := m.Int64ObservableGauge("loam.events.outbox.pending", metric.WithUnit("{event}"),
		metric.WithDescription("Number of committed events not yet relayed, as the relaying process last counted them."))
	add(err)
	lag, err := m.Float64ObservableGauge("loam.events.outbox.lag", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest committed event not yet relayed."))
	add(err)
	leader, err := m.Int64ObservableGauge("loam.events.outbox.leader", metric.WithUnit("{relay}"),
		metric.WithDescription("1 when this process's relay holds the lock and relays, 0 otherwise."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	set := metric.WithAttributes(in.table)
	in.reg, err = m.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		if r == nil || !r.leader.Load() {
			obs.ObserveInt64(leader, 0, set)
			return nil
		}
		obs.ObserveInt64(leader, 1, set)
		obs.ObserveInt64(pending, r.pending.Load(), set)
		obs.ObserveFloat64(lag, float64(r.lag.Load())/1e9, set)
		return nil
	}, pending, lag, leader)
	return in, err
}

// errorType is the error.type attribute of err: the SQLSTATE of a
// PostgreSQL error, "timeout", or the error's Go type.
func errorType(err error) attribute.KeyValue {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		return semconv.ErrorTypeKey.String(pgErr.Code)
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return semconv.ErrorTypeKey.String("timeout")
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return semconv.ErrorTypeKey.String(fmt.Sprintf("%T", err))
		}
		err = u
	}
}
