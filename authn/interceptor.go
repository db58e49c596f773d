package authn

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn/internal/token"
)

// What a caller learns about a failure: that it must authenticate, or that
// authentication cannot be done right now and a retry may succeed.
var (
	unauthenticated = status.Error(codes.Unauthenticated, "authentication required")
	unavailable     = status.Error(codes.Unavailable, "authentication temporarily unavailable")
)

// UnaryInterceptor authenticates every unary call; it is a
// grpc.UnaryServerInterceptor. See StreamInterceptor for the rules.
func (a *Authenticator) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.Authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// StreamInterceptor authenticates every streaming call; it is a
// grpc.StreamServerInterceptor.
//
// The caller's credentials are the bearer token of the "authorization"
// metadata ("Bearer" in any case), else, with Config.MTLS, the verified
// client certificate. On success the handler's context carries the
// Principal (FromContext). A call without credentials is admitted only to a
// method named with WithPublicMethods; the service package names the
// methods whose access rule is public there, from the same table that
// authorization enforces. Invalid credentials are refused even on a public
// method, so that a broken client is noticed rather than silently served
// as anonymous.
//
// A refusal is codes.Unauthenticated with the message "authentication
// required", except when the issuer's keys cannot be fetched
// (ErrUnavailable): that is the server's failure, not the caller's, and is
// codes.Unavailable "authentication temporarily unavailable", which
// clients may retry. The reason goes to the log (Info, Warn for
// ErrUnavailable), to an event on the call's span, and to the
// loam.authn.failures counter with a reason attribute. When the caller's
// context ends while keys are fetched, the call ends with the context's
// code (Canceled or DeadlineExceeded) and a generic message.
func (a *Authenticator) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.Authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if ctx == ss.Context() {
		return handler(srv, ss)
	}
	return handler(srv, &stream{ServerStream: ss, ctx: ctx})
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// Authenticate does for one call of method (a full gRPC method name) what
// the interceptors do, for a server that runs its own chain: it returns the
// context for the handler, carrying the principal, or the status error to
// send. A call without credentials on a public method gets ctx back as it
// is.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (context.Context, error) {
	p, err := a.principal(ctx)
	switch {
	case err == nil:
		return NewContext(ctx, p), nil
	case errors.Is(err, ErrMissing) && a.public[method]:
		return ctx, nil
	case ctx.Err() != nil:
		// The caller gave up or ran out of time: only the code, never the
		// detail of what was being fetched.
		return nil, status.Error(status.FromContextError(ctx.Err()).Code(), "authentication did not finish")
	}
	a.record(ctx, method, err)
	if errors.Is(err, ErrUnavailable) {
		return nil, unavailable
	}
	return nil, unauthenticated
}

func (a *Authenticator) principal(ctx context.Context) (*Principal, error) {
	raw, err := bearer(ctx)
	if err != nil {
		return nil, err
	}
	if raw != "" {
		return a.Verify(ctx, raw)
	}
	if a.mtls {
		if p, err := peerPrincipal(ctx); p != nil || err != nil {
			return p, err
		}
	}
	return nil, ErrMissing
}

// bearer returns the bearer token of the incoming metadata, "" when there
// is no authorization entry.
func bearer(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", &Error{Reason: token.ReasonMalformed, Detail: "several authorization entries"}
	}
	scheme, tok, _ := strings.Cut(vals[0], " ")
	tok = strings.TrimLeft(tok, " ")
	if !strings.EqualFold(scheme, "bearer") || tok == "" {
		return "", &Error{Reason: token.ReasonMalformed, Detail: "authorization is not \"Bearer <token>\""}
	}
	return tok, nil
}

const meterName = "github.com/loamhq/loam/authn"

var allReasons = []string{
	token.ReasonMissing, token.ReasonTooLarge, token.ReasonMalformed, token.ReasonAlgorithm, token.ReasonHeader,
	token.ReasonIssuer, token.ReasonUnknownKey, token.ReasonUnavailable, token.ReasonSignature, token.ReasonExpired,
	token.ReasonNotYetValid, token.ReasonAudience, token.ReasonAuthorizedParty, token.ReasonClaims, token.ReasonCertificate,
	token.ReasonLifetime,
}

func (a *Authenticator) initMetrics(mp metric.MeterProvider) error {
	var err error
	a.failures, err = mp.Meter(meterName).Int64Counter("loam.authn.failures",
		metric.WithDescription("Calls refused by authentication, by reason."),
		metric.WithUnit("{call}"))
	if err != nil {
		return err
	}
	a.reasons = make(map[string]metric.AddOption, len(allReasons))
	for _, r := range allReasons {
		a.reasons[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
	}
	return nil
}

// record reports a refusal to the log, the span and the counter.
func (a *Authenticator) record(ctx context.Context, method string, err error) {
	reason := "unknown"
	if e, ok := errors.AsType[*Error](err); ok {
		reason = e.Reason
	}
	opt, ok := a.reasons[reason]
	if !ok {
		opt = metric.WithAttributes(attribute.String("reason", reason))
	}
	a.failures.Add(ctx, 1, opt)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("loam.authn.failure", trace.WithAttributes(
			attribute.String("loam.authn.reason", reason),
			attribute.String("rpc.method", method)))
	}
	level := slog.LevelInfo
	if reason == token.ReasonUnavailable {
		level = slog.LevelWarn
	}
	a.log.LogAttrs(ctx, level, "authentication failed",
		slog.String("reason", reason), slog.String("method", method), slog.String("error", err.Error()))
}
