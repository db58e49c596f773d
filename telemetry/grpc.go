package telemetry

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// scopeName is the instrumentation scope of everything Loam's telemetry
// records.
const scopeName = "github.com/loamhq/loam/telemetry"

// maxMethods bounds the number of distinct rpc.method values a handler
// records. Past it, methods are recorded as "_OTHER", as the semantic
// conventions ask for unknown methods, so a client calling random method
// names cannot grow the metrics without bound.
const maxMethods = 1024

// HandlerOption configures ServerHandler and ClientHandler.
type HandlerOption interface{ applyHandler(*handlerOptions) }

type handlerOptionFunc func(*handlerOptions)

func (f handlerOptionFunc) applyHandler(o *handlerOptions) { f(o) }

type handlerOptions struct {
	public  func(fullMethod string) bool
	filter  func(fullMethod string) bool
	methods []string
	fixed   bool // methods is the complete list
}

// Methods names every method the server serves (full names,
// /package.Service/Method), so the handler prepares each one's span name,
// attributes and public flag up front. A method outside the list is
// recorded as "_OTHER" and treated as a public endpoint, whatever its
// name, so no caller can grow the metrics or make the service trust its
// trace context by calling names the server does not serve. Without this
// option, the first 1024 distinct names are recorded as they come.
func Methods(fullMethods ...string) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.methods, o.fixed = fullMethods, true })
}

// isPublic reports whether a known method faces the public; unknown ones
// always do.
func (o *handlerOptions) isPublic(fullMethod string) bool {
	return o.public != nil && o.public(fullMethod)
}

// PublicEndpoint marks the methods for which public returns true as facing
// callers outside the trust boundary: a trace context arriving with their
// calls is linked to the server span instead of becoming its parent, so a
// caller cannot choose the trace, or the sampling decision, of the service.
// A nil public marks every method public. Baggage that arrives with a
// public method's call is dropped, so it does not travel further either.
func PublicEndpoint(public func(fullMethod string) bool) HandlerOption {
	if public == nil {
		public = func(string) bool { return true }
	}
	return handlerOptionFunc(func(o *handlerOptions) { o.public = public })
}

// Filter replaces the default choice of which methods are instrumented:
// instrument returns false for methods that get neither spans nor metrics.
// By default every method is instrumented except gRPC health checks and
// reflection, which would drown real traffic.
func Filter(instrument func(fullMethod string) bool) HandlerOption {
	return handlerOptionFunc(func(o *handlerOptions) { o.filter = instrument })
}

// DefaultFilter is the default of Filter: it instruments every method except
// those of grpc.health.v1.Health and the gRPC reflection services.
func DefaultFilter(fullMethod string) bool {
	return !strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") &&
		!strings.HasPrefix(fullMethod, "/grpc.reflection.v1.ServerReflection/") &&
		!strings.HasPrefix(fullMethod, "/grpc.reflection.v1alpha.ServerReflection/")
}

// ServerHandler returns a gRPC stats handler for a server, for
// grpc.StatsHandler. Build it once, at start-up.
//
// Per RPC it starts a server span that continues the caller's W3C trace
// context (or only links it, for PublicEndpoint methods), and records the
// rpc.server.call.duration histogram of the OpenTelemetry semantic
// conventions with rpc.system.name, rpc.method, rpc.response.status_code and,
// for server errors, error.type. Attribute sets are computed once per method
// and status code, so recording a metric allocates nothing, and span
// attributes are only set on spans that are sampled.
func (t *Telemetry) ServerHandler(opts ...HandlerOption) stats.Handler {
	return newHandler(t, true, opts)
}

// ClientHandler returns a gRPC stats handler for a client connection, for
// grpc.WithStatsHandler. It starts a client span per RPC, injects the trace
// context into the outgoing metadata, and records rpc.client.call.duration.
func (t *Telemetry) ClientHandler(opts ...HandlerOption) stats.Handler {
	return newHandler(t, false, opts)
}

type handler struct {
	server   bool
	sampler  *sampler // nil unless New built the tracer provider
	w3c      bool     // prop is Loam's own W3C propagator
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	duration metric.Float64Histogram
	kind     trace.SpanStartOption
	opts     handlerOptions

	fixed   map[string]*methodInfo // with Methods: every known method; read-only
	methods sync.Map               // without Methods: full method name to *methodInfo
	count   atomic.Int64
	other   *methodInfo
}

// methodInfo is what a handler computes once per method.
type methodInfo struct {
	h      *handler
	name   string // span name: "package.Service/Method"
	skip   bool
	public bool
	start  []trace.SpanStartOption // span kind and attributes
	// record[code] is the option that carries the metric attribute set of
	// an RPC that ended with that code.
	record [codes.Unauthenticated + 1][]metric.RecordOption
}

type rpcKey struct{}

func newHandler(t *Telemetry, server bool, opts []HandlerOption) *handler {
	h := &handler{server: server, prop: t.prop, w3c: t.w3c, sampler: t.sampler, opts: handlerOptions{filter: DefaultFilter}}
	for _, o := range opts {
		o.applyHandler(&h.opts)
	}
	h.tracer = t.tp.Tracer(scopeName, trace.WithSchemaURL(semconv.SchemaURL))
	meter := t.mp.Meter(scopeName, metric.WithSchemaURL(semconv.SchemaURL))
	name, desc, kind := "rpc.client.call.duration", "Measures the duration of an outgoing Remote Procedure Call (RPC).", trace.SpanKindClient
	if server {
		name, desc, kind = "rpc.server.call.duration", "Measures the duration of an incoming Remote Procedure Call (RPC).", trace.SpanKindServer
	}
	h.kind = trace.WithSpanKind(kind)
	// The error is reported to the global error handler by the SDK and the
	// returned instrument is a no-op, so a bad meter cannot stop a server.
	h.duration, _ = meter.Float64Histogram(name,
		metric.WithDescription(desc),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10),
	)
	h.other = h.newMethodInfo("_OTHER", "_OTHER")
	h.other.public = true // a name the server does not know deserves no trust
	if h.opts.fixed {
		h.fixed = make(map[string]*methodInfo, len(h.opts.methods))
		for _, m := range h.opts.methods {
			h.fixed[m] = h.newMethodInfo(m, strings.TrimPrefix(m, "/"))
		}
	}
	return h
}

func (h *handler) method(fullMethod string) *methodInfo {
	if h.fixed != nil {
		if mi, ok := h.fixed[fullMethod]; ok {
			return mi
		}
		return h.other
	}
	if mi, ok := h.methods.Load(fullMethod); ok {
		return mi.(*methodInfo)
	}
	if h.count.Load() >= maxMethods {
		return h.other
	}
	name := strings.TrimPrefix(fullMethod, "/")
	mi, loaded := h.methods.LoadOrStore(fullMethod, h.newMethodInfo(fullMethod, name))
	if !loaded {
		h.count.Add(1)
	}
	return mi.(*methodInfo)
}

func (h *handler) newMethodInfo(fullMethod, name string) *methodInfo {
	mi := &methodInfo{h: h, name: name}
	mi.skip = h.opts.filter != nil && fullMethod != "_OTHER" && !h.opts.filter(fullMethod)
	mi.public = h.opts.isPublic(fullMethod)
	base := []attribute.KeyValue{semconv.RPCSystemNameGRPC, semconv.RPCMethod(name)}
	mi.start = []trace.SpanStartOption{h.kind, trace.WithAttributes(base...)}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		attrs := append(append([]attribute.KeyValue{}, base...), semconv.RPCResponseStatusCode(codeName(c)))
		if h.isError(c) {
			attrs = append(attrs, semconv.ErrorTypeKey.String(codeName(c)))
		}
		mi.record[c] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	}
	return mi
}

// isError reports whether an RPC that ended with c failed from this side's
// point of view: every non-OK code for a client; for a server only the codes
// that mean the server failed, not that the caller asked wrongly.
func (h *handler) isError(c codes.Code) bool {
	if !h.server {
		return c != codes.OK
	}
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// TagRPC starts the RPC's span and remembers its method.
func (h *handler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	mi := h.method(info.FullMethodName)
	if mi.skip {
		return ctx
	}
	if h.server {
		ctx = h.startServer(ctx, mi)
	} else {
		ctx = h.start(ctx, mi, trace.SpanContextFromContext(ctx), nil)
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			var out outgoingCarrier
			h.prop.Inject(ctx, &out)
			if len(out) > 0 {
				ctx = metadata.AppendToOutgoingContext(ctx, out...)
			}
		}
	}
	return context.WithValue(ctx, rpcKey{}, mi)
}

// startServer starts the span of a server call: under the caller's trace
// context, or for public endpoints in a trace of its own that links to it,
// without the caller's baggage.
func (h *handler) startServer(ctx context.Context, mi *methodInfo) context.Context {
	if mi.public {
		var link []trace.SpanStartOption
		if sc := linkedContext(ctx, h.prop, h.w3c); sc.IsValid() {
			link = []trace.SpanStartOption{trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc})}
		}
		return h.start(ctx, mi, trace.SpanContext{}, link)
	}
	ctx = extractIncoming(ctx, h.prop, h.w3c)
	return h.start(ctx, mi, trace.SpanContextFromContext(ctx), nil)
}

// start starts the call's span under parent. With Loam's own sampler it
// goes through the SDK only for calls that will be recorded (see sampler).
func (h *handler) start(ctx context.Context, mi *methodInfo, parent trace.SpanContext, extra []trace.SpanStartOption) context.Context {
	opts := mi.start
	if len(extra) > 0 {
		opts = append(opts[:len(opts):len(opts)], extra...)
	}
	if h.sampler != nil {
		switch {
		case parent.IsValid() && !parent.IsSampled():
			return ctx // the parent's unsampled context is the call's
		case !parent.IsValid():
			if !h.sampler.draw() {
				return unsampledRoot(ctx)
			}
			// The mark must reach the sampler but not the handler.
			_, span := h.tracer.Start(forceSample(ctx), mi.name, opts...)
			return trace.ContextWithSpan(ctx, span)
		}
	}
	ctx, _ = h.tracer.Start(ctx, mi.name, opts...)
	return ctx
}

// HandleRPC ends the span and records the duration when the RPC ends.
func (h *handler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok {
		return
	}
	mi, ok := ctx.Value(rpcKey{}).(*methodInfo)
	if !ok {
		return
	}
	code := status.Code(end.Error)
	if code > codes.Unauthenticated {
		code = codes.Unknown
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(semconv.RPCResponseStatusCode(codeName(code)))
		if h.isError(code) {
			span.SetAttributes(semconv.ErrorTypeKey.String(codeName(code)))
			span.SetStatus(otelcodes.Error, status.Convert(end.Error).Message())
		}
		span.End(trace.WithTimestamp(end.EndTime))
	}
	if h.duration.Enabled(ctx) {
		h.duration.Record(ctx, end.EndTime.Sub(end.BeginTime).Seconds(), mi.record[code]...)
	}
}

// TagConn returns ctx: the handler keeps no per-connection state.
func (h *handler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn does nothing: the handler records no connection stats.
func (h *handler) HandleConn(context.Context, stats.ConnStats) {}

// codeNames are the canonical names of the gRPC status codes, as
// rpc.response.status_code and error.type want them.
var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

func codeName(c codes.Code) string { return codeNames[c] }

// linkedContext returns the span context that the call's incoming
// metadata carries, without putting it or any baggage into ctx.
func linkedContext(ctx context.Context, prop propagation.TextMapPropagator, w3c bool) trace.SpanContext {
	if w3c && len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(prop.Extract(context.Background(), incomingCarrier{ctx}))
}

// incomingCarrier reads the incoming metadata of a server context without
// copying it, as metadata.FromIncomingContext would.
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c incomingCarrier) Set(string, string) {}

func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// outgoingCarrier collects key-value pairs for AppendToOutgoingContext.
type outgoingCarrier []string

func (c *outgoingCarrier) Get(string) string { return "" }
func (c *outgoingCarrier) Set(k, v string)   { *c = append(*c, k, v) }
func (c *outgoingCarrier) Keys() []string {
	keys := make([]string, 0, len(*c)/2)
	for i := 0; i < len(*c); i += 2 {
		keys = append(keys, (*c)[i])
	}
	return keys
}
