package service

import (
	"context"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/loamhq/loam/authn"
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
