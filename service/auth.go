package service

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
)

// exemptMethods are served without authentication or authorization:
// health checks, which load balancers and orchestrators make without
// credentials, and reflection, which is off in production.
var exemptMethods = []string{
	healthpb.Health_Check_FullMethodName,
	healthpb.Health_Watch_FullMethodName,
	healthpb.Health_List_FullMethodName,
	reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName,
}

// authnConfigured reports whether the authn section asks for
// authentication: a trusted issuer or client certificates.
func authnConfigured(c authn.Config) bool { return len(c.Issuers) > 0 || c.MTLS }

// newAuthenticator builds the authentication slot from the authn section.
func (s *Server) newAuthenticator() (*authn.Authenticator, error) {
	return authn.New(s.cfg.Authn,
		authn.WithLogger(s.log),
		authn.WithMeterProvider(s.tel.MeterProvider()),
		authn.WithPublicMethods(exemptMethods...))
}

// warmUp fetches the issuers' discovery documents and keys in the
// background, so the first calls do not wait for them. A failure is only
// logged: the authenticator retries on demand, and keys it has keep
// working.
func (s *Server) warmUp(ctx context.Context, a *authn.Authenticator) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.Ready(ctx); err != nil {
		s.log.Warn("identity provider not reachable yet; tokens will be checked once it is", "error", err)
	}
}

// authzConfigured reports whether the server authorizes calls: whenever it
// authenticates them, or the authz section names roles or rules.
func authzConfigured(c Config) bool {
	return authnConfigured(c.Authn) || len(c.Authz.Roles) > 0 || len(c.Authz.Rules) > 0
}

// lazyAuthorizer fills the authorization slot before the server's services
// are known. Serve builds the Authorizer from the registered services, and
// refuses to start when a method has no rule, before the first call.
type lazyAuthorizer struct {
	a atomic.Pointer[authz.Authorizer]
}

var errNotServing = status.Error(codes.Unavailable, "not serving yet")

func (l *lazyAuthorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	a := l.a.Load()
	if a == nil {
		return nil, errNotServing
	}
	return a.UnaryInterceptor(ctx, req, info, handler)
}

func (l *lazyAuthorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	a := l.a.Load()
	if a == nil {
		return errNotServing
	}
	return a.StreamInterceptor(srv, ss, info, handler)
}

// buildAuthorizer compiles the rules of every registered method. The
// authorizer logs its own policy warnings.
func (s *Server) buildAuthorizer() error {
	a, err := authz.New(s.cfg.Authz, s.grpc.GetServiceInfo(),
		authz.WithLogger(s.log), authz.WithMeterProvider(s.tel.MeterProvider()))
	if err != nil {
		return err
	}
	s.authz.a.Store(a)
	return nil
}

// Authorizer returns the server's authorizer once Serve has built it from
// the authz section and the registered services, or nil. Use it to
// replace the role policy at run time (SetPolicy), for example from
// config.Watch.
func (s *Server) Authorizer() *authz.Authorizer {
	if s.authz == nil {
		return nil
	}
	return s.authz.a.Load()
}
