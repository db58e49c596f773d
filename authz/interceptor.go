package authz

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/loamhq/loam/authn"
)

// The errors the interceptors return: a generic status, nothing more.
var (
	errPermissionDenied = permissionDenied.Err()
	errUnauthenticated  = unauthenticated.Err()
)

func (d *Decision) err() error {
	if d.Reason == ReasonUnauthenticated {
		return errUnauthenticated
	}
	return errPermissionDenied
}

// UnaryInterceptor authorizes every unary call; it is a
// grpc.UnaryServerInterceptor, to run after authn's. It decides with the
// method's rule, the principal of the context (authn.FromContext) and the
// request message, and puts the Authorizer in the handler's context for
// Check. See StreamInterceptor for the rules.
func (a *Authorizer) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.Authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Authorize decides a unary call of fullMethod with request req as
// UnaryInterceptor does, for a server that runs its own chain: it returns
// the context for the handler, which carries the Authorizer for Check, or
// the status error to send. The decision is recorded as the interceptor's.
func (a *Authorizer) Authorize(ctx context.Context, fullMethod string, req any) (context.Context, error) {
	p, _ := authn.FromContext(ctx)
	d := Decision{Method: fullMethod}
	if m := a.methods[fullMethod]; m != nil {
		d = a.decideRule(m, p)
		m.evalCondition(&d, req, p)
	}
	a.record(ctx, &d, p, false)
	if !d.Allowed {
		return nil, d.err()
	}
	return NewContext(ctx, a), nil
}

// StreamInterceptor authorizes every streaming call; it is a
// grpc.StreamServerInterceptor, to run after authn's.
//
// A public or exempt method admits anybody; an authenticated one, any
// principal; a permission, a principal with a role that grants it (or a
// scope of that name, with Config.ScopesGrant). A method not known to New
// is denied. These are decided when the stream starts, before the handler
// runs. A condition must then also be true: on a server-streaming method
// it is evaluated against the request, the first message the handler
// receives, before RecvMsg returns it; until then the handler cannot send
// (SendMsg fails with PermissionDenied). Client-streaming methods cannot
// have conditions (New refuses them); check each message with Check
// instead.
//
// A refusal is codes.Unauthenticated "authentication required" when a
// principal is needed and there is none, else codes.PermissionDenied
// "permission denied". Every decision, allow or deny, is logged
// (Config.DecisionLogLevel), set on the call's span (loam.authz.decision,
// loam.authz.permission, loam.authz.reason) and counted
// (loam.authz.decisions, by decision and reason).
func (a *Authorizer) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	p, _ := authn.FromContext(ctx)
	m := a.methods[info.FullMethod]
	d := Decision{Method: info.FullMethod}
	if m != nil {
		d = a.decideRule(m, p)
	}
	if d.Allowed && m.cond != nil {
		return handler(srv, &conditionStream{ServerStream: ss, ctx: NewContext(ctx, a), a: a, m: m, p: p, base: d})
	}
	a.record(ctx, &d, p, false)
	if !d.Allowed {
		return d.err()
	}
	return handler(srv, &serverStream{ServerStream: ss, ctx: NewContext(ctx, a)})
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// conditionStream decides on the first message received.
type conditionStream struct {
	grpc.ServerStream
	ctx   context.Context
	a     *Authorizer
	m     *method
	p     *authn.Principal
	base  Decision     // the decision before the condition; read-only
	d     Decision     // the final decision; RecvMsg's goroutine only
	state atomic.Int32 // pending, allowed or denied
}

const (
	pending int32 = iota
	allowed
	denied
)

var errSentEarly = errors.New("the handler sent a message before receiving the request that the condition reads")

func (s *conditionStream) Context() context.Context { return s.ctx }

func (s *conditionStream) RecvMsg(msg any) error {
	switch s.state.Load() {
	case allowed:
		return s.ServerStream.RecvMsg(msg)
	case denied:
		return s.d.err()
	}
	if err := s.ServerStream.RecvMsg(msg); err != nil {
		return err
	}
	d := s.base
	s.m.evalCondition(&d, msg, s.p)
	s.a.record(s.ctx, &d, s.p, false)
	s.d = d
	next := denied
	if d.Allowed {
		next = allowed
	}
	switch {
	case !s.state.CompareAndSwap(pending, next): // SendMsg came first and denied
		return errPermissionDenied
	case !d.Allowed:
		return d.err()
	}
	return nil
}

func (s *conditionStream) SendMsg(msg any) error {
	if s.state.Load() == allowed {
		return s.ServerStream.SendMsg(msg)
	}
	if s.state.CompareAndSwap(pending, denied) {
		d := s.base
		d.Allowed, d.Reason, d.Err = false, ReasonConditionError, errSentEarly
		s.a.record(s.ctx, &d, s.p, false)
	}
	return errPermissionDenied
}

const meterName = "github.com/loamhq/loam/authz"

func (a *Authorizer) initMetrics(mp metric.MeterProvider) error {
	var err error
	a.decisions, err = mp.Meter(meterName).Int64Counter("loam.authz.decisions",
		metric.WithDescription("Authorization decisions, by decision and reason."),
		metric.WithUnit("{decision}"))
	if err != nil {
		return err
	}
	for src, name := range []string{"call", "handler"} {
		for r := range numReasons {
			a.attrs[src][r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("decision", decisionWord(r.allows())),
				attribute.String("reason", r.String()),
				attribute.String("source", name)))}
		}
	}
	return nil
}

func decisionWord(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

// record reports a decision to the counter, the span and the log. It
// allocates nothing when the span is not recording and the log level is
// disabled.
//
// The call's decision sets the span's loam.authz.* attributes; a decision of
// Check inside the handler (inHandler) is a "loam.authz.check" span event
// with the same attributes, so it never hides the call's own decision. The
// counter's source attribute is "call" or "handler", so an alert on the
// denies of calls does not fire on the denies that handlers expect as part
// of their logic. Handler decisions are logged at debug (unless
// Config.DecisionLogLevel says otherwise), and deny lines are limited to
// Config.DenyLogRate a second, the next line saying how many were dropped.
func (a *Authorizer) record(ctx context.Context, d *Decision, p *authn.Principal, inHandler bool) {
	src := 0
	if inHandler {
		src = 1
	}
	a.decisions.Add(ctx, 1, a.attrs[src][d.Reason]...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{
			attribute.String("loam.authz.decision", decisionWord(d.Allowed)),
			attribute.String("loam.authz.permission", d.Permission),
			attribute.String("loam.authz.reason", d.Reason.String()),
		}
		if inHandler {
			span.AddEvent("loam.authz.check", trace.WithAttributes(attrs...))
		} else {
			span.SetAttributes(attrs...)
		}
	}
	level := a.denyLevel
	switch {
	case inHandler:
		level = a.handlerLevel
	case d.Allowed:
		level = a.allowLevel
	}
	if !a.log.Enabled(ctx, level) {
		return
	}
	var suppressed int64
	if !d.Allowed && a.denyLogs != nil {
		if !a.denyLogs.Allow() {
			a.suppressed.Add(1)
			return
		}
		suppressed = a.suppressed.Swap(0)
	}
	attrs := []slog.Attr{
		slog.String("decision", decisionWord(d.Allowed)),
		slog.String("reason", d.Reason.String()),
		slog.String("method", d.Method),
		slog.String("permission", d.Permission),
	}
	if p != nil {
		attrs = append(attrs, slog.String("principal", p.Subject()))
	}
	if d.Role != "" {
		attrs = append(attrs, slog.String("role", d.Role))
	}
	if d.Scope != "" {
		attrs = append(attrs, slog.String("scope", d.Scope))
	}
	if d.Err != nil {
		attrs = append(attrs, slog.String("error", d.Err.Error()))
	}
	if inHandler {
		attrs = append(attrs, slog.String("source", "handler"))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int64("suppressed_denies", suppressed))
	}
	a.log.LogAttrs(ctx, level, "authz decision", attrs...)
}
