package service

import (
	"context"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/telemetry"
)

// What a refused call learns, and the reason it is counted under.
var (
	errOverloaded  = status.Error(codes.ResourceExhausted, "server overloaded, retry later")
	errRateLimited = status.Error(codes.ResourceExhausted, "rate limit exceeded, retry later")
	errMalformed   = status.Error(codes.InvalidArgument, "malformed request message")
)

const (
	rejectConcurrency = iota
	rejectRate
	rejectMalformed
	numRejects
)

var rejectReasons = [numRejects]string{"concurrency_limit", "rate_limit", "malformed_request"}

// live is what a reload may change while the server runs; every call reads
// it once.
type live struct {
	maxCalls    int64         // 0: no bound
	callTimeout time.Duration // <= 0: no default deadline
	rates       *rateLimits   // nil: none
	faults      *faults       // nil: off
}

// rejections counts the calls refused before they reach a handler, by
// reason and method; methods outside the access table count as _OTHER.
type rejections struct {
	counter metric.Int64Counter
	attrs   map[string]*[numRejects]metric.AddOption
	other   *[numRejects]metric.AddOption
}

func newRejections(mp metric.MeterProvider, methods []string) *rejections {
	r := &rejections{attrs: make(map[string]*[numRejects]metric.AddOption, len(methods))}
	// The SDK reports a bad instrument to the global error handler and
	// returns a no-op one: counting never stops a server.
	r.counter, _ = mp.Meter(meterName).Int64Counter("loam.server.rejected_calls",
		metric.WithDescription("Calls refused before their handler: load shedding, rate limits, malformed requests."),
		metric.WithUnit("{call}"))
	opts := func(method string) *[numRejects]metric.AddOption {
		var o [numRejects]metric.AddOption
		for i, reason := range rejectReasons {
			o[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", reason), attribute.String("rpc.method", method)))
		}
		return &o
	}
	for _, m := range methods {
		r.attrs[m] = opts(m)
	}
	r.other = opts("_OTHER")
	return r
}

func (r *rejections) add(ctx context.Context, method string, reason int) {
	o, ok := r.attrs[method]
	if !ok {
		o = r.other
	}
	r.counter.Add(ctx, 1, o[reason])
}

const meterName = "github.com/loamhq/loam/service"

// entry is the outermost interceptor, and the only link of the chain
// that every call crosses: it records the call's telemetry, recovers
// panics and hides stray errors, refuses malformed requests and methods
// the server does not serve, sheds load past limits.max_concurrent_calls,
// gives unary calls without a deadline the default one, and, when they are
// Loam's own, authenticates, applies rate limits and authorizes. Doing it
// in one function costs one link of grpc-go's chain (each of which
// allocates a closure per call) instead of six.
type entry struct {
	log      *slog.Logger
	live     *atomic.Pointer[live]
	inflight atomic.Int64
	codec    *requestCodec
	rejected *rejections
	rec      *telemetry.ServerRecorder
	known    map[string]bool      // the methods of the access table
	authn    *authn.Authenticator // nil: none, or another link's
	authz    *authzSlot           // nil: none, or another link's
	rates    bool                 // apply limits.rate_limits here
}

func (e *entry) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	method := info.FullMethod
	ctx, call := e.rec.Start(ctx, method)
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, panicked(ctx, e.log, method, r)
		}
		call.End(ctx, err)
	}()
	if e.codec.malformed(req) {
		e.rejected.add(ctx, method, rejectMalformed)
		return nil, errMalformed
	}
	l := e.live.Load()
	if l.maxCalls > 0 {
		if e.inflight.Add(1) > l.maxCalls {
			e.inflight.Add(-1)
			e.rejected.add(ctx, method, rejectConcurrency)
			return nil, errOverloaded
		}
		defer e.inflight.Add(-1)
	}
	if l.callTimeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, l.callTimeout)
			defer cancel()
		}
	}
	if e.authn != nil {
		if ctx, err = e.authn.Authenticate(ctx, method); err != nil {
			return nil, err
		}
	}
	if e.rates && l.rates != nil && !l.rates.allow(ctx, method) {
		e.rejected.add(ctx, method, rejectRate)
		return nil, errRateLimited
	}
	if e.authz != nil {
		if ctx, err = e.authz.Load().Authorize(ctx, method, req); err != nil {
			return nil, err
		}
	}
	resp, err = handler(ctx, req)
	return resp, sanitize(ctx, e.log, method, err)
}

func (e *entry) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	method := info.FullMethod
	ctx, call := e.rec.Start(ss.Context(), method)
	defer func() {
		if r := recover(); r != nil {
			err = panicked(ctx, e.log, method, r)
		}
		call.End(ctx, err)
	}()
	if !e.known[method] {
		return unknownMethod(srv, ss) // counted above, as _OTHER
	}
	l := e.live.Load()
	if l.maxCalls > 0 {
		if e.inflight.Add(1) > l.maxCalls {
			e.inflight.Add(-1)
			e.rejected.add(ctx, method, rejectConcurrency)
			return errOverloaded
		}
		defer e.inflight.Add(-1)
	}
	if e.authn != nil {
		if ctx, err = e.authn.Authenticate(ctx, method); err != nil {
			return err
		}
	}
	if e.rates && l.rates != nil && !l.rates.allow(ctx, method) {
		e.rejected.add(ctx, method, rejectRate)
		return errRateLimited
	}
	st := &checkedStream{ServerStream: ss, ctx: ctx, e: e, method: method}
	if e.authz != nil {
		return sanitize(ctx, e.log, method, e.authz.Load().StreamInterceptor(srv, st, info, handler))
	}
	return sanitize(ctx, e.log, method, handler(srv, st))
}

// checkedStream is a stream with the call's context, whose RecvMsg
// refuses a malformed message.
type checkedStream struct {
	grpc.ServerStream
	ctx    context.Context
	e      *entry
	method string
}

func (s *checkedStream) Context() context.Context { return s.ctx }

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.e.codec.malformed(m) {
		s.e.rejected.add(s.Context(), s.method, rejectMalformed)
		return errMalformed
	}
	return nil
}

// requestCodec is gRPC's protobuf codec, except that a request that does
// not decode is marked rather than failed: grpc-go turns every decoding
// error into INTERNAL before any interceptor runs, which blames the server
// for the client's bytes. entry finds the mark and answers
// INVALID_ARGUMENT.
type requestCodec struct {
	encoding.CodecV2
	pending atomic.Int64 // marks not yet taken; skips the map when 0
	bad     sync.Map     // message pointer -> struct{}
}

func newRequestCodec() *requestCodec {
	return &requestCodec{CodecV2: encoding.GetCodecV2(protocodec.Name)}
}

func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.CodecV2.Unmarshal(data, v); err != nil {
		c.pending.Add(1)
		c.bad.Store(v, struct{}{})
	}
	return nil
}

// malformed reports, once, whether m failed to decode.
func (c *requestCodec) malformed(m any) bool {
	if c.pending.Load() == 0 {
		return false
	}
	if _, ok := c.bad.LoadAndDelete(m); ok {
		c.pending.Add(-1)
		return true
	}
	return false
}

// rateLimits is the token buckets of limits.rate_limits: one per rule and
// principal (or, for calls without one, per client address).
type rateLimits struct {
	byMethod map[string]int // full method -> index into rules
	rules    []RateLimit
	buckets  *otter.Cache[bucketKey, *rate.Limiter]
	rejected *rejections
}

type bucketKey struct {
	rule int
	who  string
}

// bucketIdle is how long an unused bucket is kept; a principal back after
// that starts with a full one, which is what it would have by then.
const bucketIdle = 10 * time.Minute

func newRateLimits(rules []RateLimit, methods []string, rejected *rejections) *rateLimits {
	if len(rules) == 0 {
		return nil
	}
	r := &rateLimits{byMethod: map[string]int{}, rules: rules, rejected: rejected}
	for _, m := range methods {
		svc, name, _ := splitMethodPattern(m)
		for i, rule := range rules {
			rs, rm, _ := splitMethodPattern(rule.Method)
			if rs == svc && (rm == "*" || rm == name) {
				r.byMethod[m] = i
				break
			}
		}
	}
	r.buckets = otter.Must(&otter.Options[bucketKey, *rate.Limiter]{
		MaximumSize:      100_000,
		ExpiryCalculator: otter.ExpiryAccessing[bucketKey, *rate.Limiter](bucketIdle),
	})
	return r
}

// allow takes a token of the caller's bucket for method, if a rule limits
// it.
func (r *rateLimits) allow(ctx context.Context, method string) bool {
	i, ok := r.byMethod[method]
	if !ok {
		return true
	}
	key := bucketKey{rule: i, who: caller(ctx)}
	lim, _ := r.buckets.Compute(key, func(old *rate.Limiter, found bool) (*rate.Limiter, otter.ComputeOp) {
		if found {
			return old, otter.CancelOp
		}
		rule := r.rules[i]
		burst := rule.Burst
		if burst == 0 {
			burst = max(1, int(math.Ceil(rule.PerSecond)))
		}
		return rate.NewLimiter(rate.Limit(rule.PerSecond), burst), otter.WriteOp
	})
	return lim.Allow()
}

// caller names whom a rate limit counts: the principal, else the client's
// address.
func caller(ctx context.Context) string {
	if p, ok := authn.FromContext(ctx); ok {
		return "p:" + p.Issuer() + "\x00" + p.Subject()
	}
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		host, _, err := net.SplitHostPort(pr.Addr.String())
		if err != nil {
			host = pr.Addr.String()
		}
		return "a:" + host
	}
	return "a:unknown"
}

// limiter is the interceptor of limits.rate_limits, after authentication.
type limiter struct{ live *atomic.Pointer[live] }

func (l limiter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if r := l.live.Load().rates; r != nil && !r.allow(ctx, info.FullMethod) {
		r.rejected.add(ctx, info.FullMethod, rejectRate)
		return nil, errRateLimited
	}
	return handler(ctx, req)
}

func (l limiter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if r := l.live.Load().rates; r != nil && !r.allow(ss.Context(), info.FullMethod) {
		r.rejected.add(ss.Context(), info.FullMethod, rejectRate)
		return errRateLimited
	}
	return handler(srv, ss)
}

// faultSlot is the interceptor of service.faults, innermost.
type faultSlot struct{ live *atomic.Pointer[live] }

func (f faultSlot) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if fl := f.live.Load().faults; fl != nil {
		return fl.unary(ctx, req, info, handler)
	}
	return handler(ctx, req)
}

func (f faultSlot) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if fl := f.live.Load().faults; fl != nil {
		return fl.stream(srv, ss, info, handler)
	}
	return handler(srv, ss)
}
