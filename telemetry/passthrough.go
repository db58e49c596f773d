package telemetry

import (
	"context"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Recording reports whether t records anything: false when both the tracer
// and the meter provider are the OpenTelemetry API's no-ops, as with the
// zero Config.
func (t *Telemetry) Recording() bool {
	_, noTraces := t.tp.(tracenoop.TracerProvider)
	_, noMetrics := t.mp.(metricnoop.MeterProvider)
	return !noTraces || !noMetrics
}

// ServerPassThrough returns server interceptors for a Telemetry that
// records nothing, to use instead of ServerHandler: they carry an incoming
// W3C trace context and baggage to the handler's context, so that calls the
// handler makes continue the caller's trace even though this service
// records none of it. They cost nothing when no trace context arrives,
// where a stats handler's bookkeeping inside grpc-go costs about twenty
// allocations per RPC even when nothing is recorded.
//
// PublicEndpoint and Methods apply as they do to ServerHandler: the calls
// of a public method, or of a method outside Methods, carry no incoming
// trace context or baggage on. Filter does not apply.
func (t *Telemetry) ServerPassThrough(opts ...HandlerOption) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	p := newPassThrough(t, opts)
	return p.unaryServer, p.streamServer
}

func newPassThrough(t *Telemetry, opts []HandlerOption) passThrough {
	p := passThrough{prop: t.prop, w3c: t.w3c}
	var o handlerOptions
	for _, opt := range opts {
		opt.applyHandler(&o)
	}
	if o.public != nil || o.fixed {
		p.public = map[string]bool{}
		for _, m := range o.methods {
			p.public[m] = o.isPublic(m)
		}
		if !o.fixed {
			p.dynamic = o.public
		}
	}
	return p
}

// ClientPassThrough returns client interceptors for a Telemetry that
// records nothing, to use instead of ClientHandler: they write the trace
// context of the call's context, if any, to the outgoing metadata.
func (t *Telemetry) ClientPassThrough() (grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor) {
	p := passThrough{prop: t.prop, w3c: t.w3c}
	return p.unaryClient, p.streamClient
}

type passThrough struct {
	prop propagation.TextMapPropagator
	w3c  bool // prop is Loam's W3C trace context and baggage propagator
	// public, when not nil, says which known methods are public; a
	// method it does not hold is public unless dynamic says otherwise.
	public  map[string]bool
	dynamic func(fullMethod string) bool // without Methods: PublicEndpoint's func
}

func (p passThrough) extract(ctx context.Context, method string) context.Context {
	if p.public != nil {
		public, known := p.public[method]
		if !known {
			public = p.dynamic == nil || p.dynamic(method)
		}
		if public {
			return ctx
		}
	}
	return extractIncoming(ctx, p.prop, p.w3c)
}

// extractIncoming returns ctx with what prop reads from the call's incoming
// metadata. When prop is Loam's W3C propagator (w3c), a call that carries
// neither traceparent nor baggage costs no allocation.
func extractIncoming(ctx context.Context, prop propagation.TextMapPropagator, w3c bool) context.Context {
	if w3c && len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 && len(metadata.ValueFromIncomingContext(ctx, "baggage")) == 0 {
		return ctx
	}
	return prop.Extract(ctx, incomingCarrier{ctx})
}

func (p passThrough) inject(ctx context.Context) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	var out outgoingCarrier
	p.prop.Inject(ctx, &out)
	if len(out) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, out...)
}

func (p passThrough) unaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(p.extract(ctx, info.FullMethod), req)
}

func (p passThrough) streamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := p.extract(ss.Context(), info.FullMethod)
	if ctx == ss.Context() {
		return handler(srv, ss)
	}
	return handler(srv, &contextStream{ss, ctx})
}

func (p passThrough) unaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(p.inject(ctx), method, req, reply, cc, opts...)
}

func (p passThrough) streamClient(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(p.inject(ctx), desc, cc, method, opts...)
}

// contextStream is a server stream with another context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
