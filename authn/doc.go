// Package authn will authenticate the callers of a Loam service.
//
// Status: not built yet. Nothing in this package works, and nothing else in
// Loam depends on it. It will own OIDC and JWT access-token verification
// (go-oidc discovery and JWKS, RFC 9068 access tokens), the Principal type and
// its context helpers, mTLS peer identity, and outbound token sources for
// service-to-service calls.
package authn
