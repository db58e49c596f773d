package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
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
// A Principal is read-only: the verified-token cache hands the same
// *Principal to every call that presents the same token, so it offers no
// way to change it, and its lists are Strings, which cannot be written
// through. It is safe for concurrent use.
type Principal struct {
	id      Identity
	claims  map[string]any // decoded payload; nil for mTLS
	payload []byte         // raw payload, for Claims
	token   string         // the bearer token, for forwarding
}

// Identity is what a Principal holds, for NewPrincipal: for tests, and for
// authentication written outside this package.
type Identity struct {
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
}

// NewPrincipal returns a principal with the identity id, which it copies.
// It has no token claims.
func NewPrincipal(id Identity) *Principal {
	id.Audiences = slices.Clone(id.Audiences)
	id.Scopes = slices.Clone(id.Scopes)
	id.Roles = slices.Clone(id.Roles)
	id.Groups = slices.Clone(id.Groups)
	return &Principal{id: id}
}

// Subject is the token's sub, or for mTLS the SPIFFE ID of the client
// certificate, else its subject distinguished name.
func (p *Principal) Subject() string { return p.id.Subject }

// Issuer is the trusted issuer URL, or for mTLS the certificate's issuer
// distinguished name.
func (p *Principal) Issuer() string { return p.id.Issuer }

// ClientID is the OAuth client the token was issued to: client_id
// (RFC 9068), else azp. Empty for mTLS.
func (p *Principal) ClientID() string { return p.id.ClientID }

// Audiences is the token's aud. Empty for mTLS.
func (p *Principal) Audiences() Strings { return Strings{p.id.Audiences} }

// Scopes come from the issuer's claim mapping. Empty for mTLS.
func (p *Principal) Scopes() Strings { return Strings{p.id.Scopes} }

// Roles come from the issuer's claim mapping. Empty for mTLS.
func (p *Principal) Roles() Strings { return Strings{p.id.Roles} }

// Groups come from the issuer's claim mapping. Empty for mTLS.
func (p *Principal) Groups() Strings { return Strings{p.id.Groups} }

// Expiry is the token's exp, or the certificate's NotAfter.
func (p *Principal) Expiry() time.Time { return p.id.Expiry }

// Method is how the caller authenticated.
func (p *Principal) Method() AuthMethod { return p.id.Method }

// Identity returns a copy of what p holds.
func (p *Principal) Identity() Identity {
	id := p.id
	id.Audiences = slices.Clone(id.Audiences)
	id.Scopes = slices.Clone(id.Scopes)
	id.Roles = slices.Clone(id.Roles)
	id.Groups = slices.Clone(id.Groups)
	return id
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

// Strings is a read-only list of strings, such as a principal's roles. The
// zero value is empty. Reading it allocates nothing; Clone copies it.
type Strings struct{ s []string }

// Len returns the number of strings.
func (l Strings) Len() int { return len(l.s) }

// At returns the i-th string; it panics when i is out of range.
func (l Strings) At(i int) string { return l.s[i] }

// Contains reports whether v is one of the strings.
func (l Strings) Contains(v string) bool { return slices.Contains(l.s, v) }

// All iterates over the strings in order.
func (l Strings) All() iter.Seq[string] { return slices.Values(l.s) }

// Clone returns a copy of the strings, nil when there are none.
func (l Strings) Clone() []string { return slices.Clone(l.s) }

// String formats the strings as fmt formats a []string.
func (l Strings) String() string { return fmt.Sprint(l.s) }

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
