package events

import (
	"context"
	"errors"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

const instrumentationName = "github.com/loamhq/loam/events"

// durationBuckets are the histogram boundaries, in seconds, that the
// OpenTelemetry messaging conventions recommend.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// instruments are a Bus's tracer and metric instruments.
type instruments struct {
	tracer          trace.Tracer
	sent            metric.Int64Counter
	sendDuration    metric.Float64Histogram
	consumed        metric.Int64Counter
	processDuration metric.Float64Histogram
	retries         metric.Int64Counter
	deadLetters     metric.Int64Counter
	duplicates      metric.Int64Counter
}

func newInstruments(o busOptions) (*instruments, error) {
	m := o.meters.Meter(instrumentationName)
	in := &instruments{tracer: o.tracers.Tracer(instrumentationName)}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		errs = append(errs, err)
		return h
	}
	in.sent = counter("messaging.client.sent.messages", "{message}", "Number of events published: accepted by the broker, or refused (with error.type).")
	in.sendDuration = histogram("messaging.client.operation.duration", "Duration of publishing, retries included.")
	in.consumed = counter("messaging.client.consumed.messages", "{message}", "Number of events delivered to a subscription, redeliveries included.")
	in.processDuration = histogram("messaging.process.duration", "Duration of one handler call.")
	in.retries = counter("loam.events.retries", "{message}", "Number of failed handler calls that will be retried.")
	in.deadLetters = counter("loam.events.dead_letters", "{message}", "Number of events a subscription gave up on, by loam.events.dead_letter.cause.")
	in.duplicates = counter("loam.events.duplicates", "{message}", "Number of deliveries skipped because the event ID was already processed.")
	return in, errors.Join(errs...)
}

// Attribute keys of Loam's own.
const (
	attrAttempt         = attribute.Key("loam.events.attempt")
	attrDeadLetterCause = attribute.Key("loam.events.dead_letter.cause")
)

// topicAttrs are the attributes of one topic's publish metrics and spans,
// computed once.
type topicAttrs struct {
	kvs      []attribute.KeyValue
	set      metric.MeasurementOption
	spanName string
	spanOpts []trace.SpanStartOption
}

func newTopicAttrs(system, topic string) topicAttrs {
	kvs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(system),
		semconv.MessagingDestinationName(topic),
		semconv.MessagingOperationName("send"),
		semconv.MessagingOperationTypeSend,
	}
	return topicAttrs{
		kvs: kvs, set: metric.WithAttributeSet(attribute.NewSet(kvs...)),
		spanName: "send " + topic,
		spanOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(kvs...)},
	}
}

// subAttrs are the attributes of one subscription's metrics and spans.
type subAttrs struct {
	kvs         []attribute.KeyValue // of process spans and metrics
	spanName    string
	spanOpts    []trace.SpanStartOption
	process     metric.MeasurementOption
	receive     metric.MeasurementOption
	deadLetters map[string]metric.MeasurementOption // by cause
}

func newSubAttrs(system, topic, name string) subAttrs {
	base := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(system),
		semconv.MessagingDestinationName(topic),
		semconv.MessagingConsumerGroupName(name),
	}
	with := func(kvs ...attribute.KeyValue) []attribute.KeyValue {
		return append(append([]attribute.KeyValue{}, base...), kvs...)
	}
	process := with(semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess)
	s := subAttrs{
		kvs:         process,
		spanName:    "process " + topic,
		spanOpts:    []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(process...)},
		process:     metric.WithAttributeSet(attribute.NewSet(process...)),
		receive:     metric.WithAttributeSet(attribute.NewSet(with(semconv.MessagingOperationName("receive"), semconv.MessagingOperationTypeReceive)...)),
		deadLetters: map[string]metric.MeasurementOption{},
	}
	for _, cause := range []string{CausePermanent, CauseMaxAttempts, CauseMalformed} {
		s.deadLetters[cause] = metric.WithAttributeSet(attribute.NewSet(with(attrDeadLetterCause.String(cause))...))
	}
	return s
}

// withError returns the attributes kvs plus error.type for err.
func withError(kvs []attribute.KeyValue, err error) metric.MeasurementOption {
	return metric.WithAttributes(append(append([]attribute.KeyValue{}, kvs...), errorType(err))...)
}

// errorType names err for the error.type attribute: the context error, a
// panic, or the Go type of the innermost error.
func errorType(err error) attribute.KeyValue {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return semconv.ErrorTypeKey.String("timeout")
	case errors.Is(err, context.Canceled):
		return semconv.ErrorTypeKey.String("canceled")
	case errors.Is(err, errPanic):
		return semconv.ErrorTypeKey.String("panic")
	case IsPermanent(err):
		return semconv.ErrorTypeKey.String("permanent")
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return semconv.ErrorTypeKey.String(reflect.TypeOf(err).String())
}

// endSpan records err on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(errorType(err))
	}
	span.End()
}

// seconds is the time since start, in seconds.
func seconds(start time.Time) float64 { return time.Since(start).Seconds() }
