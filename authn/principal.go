package authn

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/loamhq/loam/authn/internal/claims"
)

// AuthMethod says how a principal proved its identity.
type AuthMethod int

const (
	// AuthToken: a bearer access token verified against a trusted issuer.
	AuthToken AuthMethod = iota + 1
	// AuthMTLS: a client certificate verified by the TLS handshake.
	AuthMTLS
)

// String returns "token" or "mtls".
func (m AuthMethod) String() string {
	switch m {
	case AuthToken:
		return "token"
	case AuthMTLS:
		return "mtls"
	}
	return "unknown"
}

// Principal is an authenticated caller.
//
// A Principal is immutable once made, and shared: the verified-token cache
// hands the same *Principal to every call that presents the same token, so
// callers must not modify it or the slices it holds. It is safe for
// concurrent use.
type Principal struct {
	// Subject is the token's sub, or for mTLS the SPIFFE ID of the client
	// certificate, else its subject distinguished name.
	Subject string
	// Issuer is the trusted issuer URL, or for mTLS the certificate's issuer
	// distinguished name.
	Issuer string
	// ClientID is the OAuth client the token was issued to: client_id
	// (RFC 9068), else azp. Empty for mTLS.
	ClientID string
	// Audiences is the token's aud. Empty for mTLS.
	Audiences []string
	// Scopes, Roles and Groups come from the issuer's claim mapping. Empty
	// for mTLS.
	Scopes, Roles, Groups []string
	// Expiry is the token's exp, or the certificate's NotAfter.
	Expiry time.Time
	// Method is how the caller authenticated.
	Method AuthMethod

	claims  map[string]any // decoded payload; nil for mTLS
	payload []byte         // raw payload, for Claims
	token   string         // the bearer token, for forwarding
}

// Claim returns the claim name of the token as encoding/json decodes it
// into an any (string, float64, bool, []any, map[string]any, nil), and
// whether it is present. A dotted name such as "realm_access.roles" walks
// into objects when no claim has the whole name. The value is shared: do
// not modify it. An mTLS principal has no claims.
func (p *Principal) Claim(name string) (any, bool) {
	if p.claims == nil {
		return nil, false
	}
	return claims.Lookup(p.claims, name)
}

// Claims decodes the token's claims into v with encoding/json, for typed
// access to claims Principal does not name. An mTLS principal has none: it
// returns an error.
func (p *Principal) Claims(v any) error {
	if p.payload == nil {
		return errors.New("authn: principal has no token claims")
	}
	return json.Unmarshal(p.payload, v)
}

type principalKey struct{}

// NewContext returns a copy of ctx that carries p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal that NewContext put in ctx, if any. The
// server interceptors put it there for every authenticated call.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
