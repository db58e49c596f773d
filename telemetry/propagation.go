package telemetry

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Inject writes the W3C trace context and baggage of ctx into the headers of
// an outgoing message, through the global propagator that Setup installs.
// Use propagation.MapCarrier for map[string]string headers and
// HeaderCarrier for multi-valued ones.
func Inject(ctx context.Context, headers propagation.TextMapCarrier) {
	otel.GetTextMapPropagator().Inject(ctx, headers)
}

// Extract returns ctx with the trace context and baggage carried by the
// headers of an incoming message, so the consumer's span continues the
// producer's trace.
func Extract(ctx context.Context, headers propagation.TextMapCarrier) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, headers)
}

// Link returns a link to the span that produced a message, for consumers
// that start a trace of their own per message (a batch, or a message from
// outside the trust boundary) but keep the way back to the producer. ok is
// false when the headers carry no valid trace context.
func Link(ctx context.Context, headers propagation.TextMapCarrier) (link trace.Link, ok bool) {
	sc := trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(ctx, headers))
	if !sc.IsValid() {
		return trace.Link{}, false
	}
	return trace.Link{SpanContext: sc}, true
}

// HeaderCarrier adapts multi-valued message headers, such as NATS headers,
// to the propagators. Unlike propagation.HeaderCarrier it keeps keys exactly
// as the propagator writes them (traceparent, tracestate, baggage), since
// message headers, unlike HTTP's, are case-sensitive.
type HeaderCarrier map[string][]string

// Get returns the first value of key, or "".
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key with value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys returns the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
