package telemetry

import (
	"context"
	"math/rand/v2"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// sampler is the root sampler of the tracer providers that New builds,
// under sdktrace.ParentBased: a call that arrives with a parent follows the
// parent's decision, and a new trace is sampled with probability ratio.
//
// Knowing the sampler lets the gRPC handlers skip the SDK for the calls it
// will not record, which are most of them at low ratios: a call whose
// parent is not sampled keeps its parent's span context, and a new trace
// that loses the draw gets random IDs with the sampled flag off, so logs
// still carry a trace_id and callees still follow the decision. Only the
// calls that win the draw go through the SDK, marked so that the sampler
// confirms the handler's decision rather than drawing again.
type sampler struct {
	ratio float64
	byID  sdktrace.Sampler // for spans started outside the handlers
}

func newSampler(ratio float64) *sampler {
	return &sampler{ratio: ratio, byID: sdktrace.TraceIDRatioBased(ratio)}
}

type sampledKey struct{}

// draw decides whether a new trace is sampled.
func (s *sampler) draw() bool {
	return s.ratio >= 1 || (s.ratio > 0 && rand.Float64() < s.ratio)
}

// ShouldSample implements sdktrace.Sampler.
func (s *sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.ParentContext != nil && p.ParentContext.Value(sampledKey{}) != nil {
		return sdktrace.SamplingResult{
			Decision:   sdktrace.RecordAndSample,
			Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
		}
	}
	return s.byID.ShouldSample(p)
}

// Description implements sdktrace.Sampler.
func (s *sampler) Description() string { return "LoamRatio{" + s.byID.Description() + "}" }

// unsampledRoot returns ctx with a new, unsampled span context.
func unsampledRoot(ctx context.Context) context.Context {
	var tid trace.TraceID
	var sid trace.SpanID
	putUint64(tid[:8], rand.Uint64())
	putUint64(tid[8:], rand.Uint64()|1) // never all zero
	putUint64(sid[:], rand.Uint64()|1)
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// forceSample marks ctx so that the sampler samples the span started
// from it.
func forceSample(ctx context.Context) context.Context {
	return context.WithValue(ctx, sampledKey{}, true)
}
