// Package loamtest is the test kit of services built on Loam: a local
// OpenID Connect issuer that mints tokens, a Loam server on loopback that
// a test starts in one call and that stops when the test ends, and clients
// that call it with a token.
//
//	func TestCreateCapture(t *testing.T) {
//		iss := loamtest.NewIssuer(t, "captures-api")
//		srv := loamtest.StartServer(t, cfg(iss), func(r grpc.ServiceRegistrar) {
//			capturesv1.RegisterCaptureServiceServer(r, captures.New())
//		})
//		alice := srv.Client(t, iss.Token(t, "alice", loamtest.Roles("planter")))
//		_, err := capturesv1.NewCaptureServiceClient(alice).CreateCapture(t.Context(), req)
//		...
//	}
//
// The server is the real one (service.New with the test's configuration):
// the access rules of the .proto, authentication against the issuer's
// keys, authorization, limits and telemetry all run as in production, so a
// test of "allowed", "denied" and "unauthenticated" tests what will ship.
// Its log goes to the test's output, shown when the test fails or with -v.
//
// # The issuer
//
// Issuer serves discovery, a JWKS and the client credentials grant on a
// free loopback port, and mints RFC 9068 access tokens (typ at+jwt, roles
// in a "roles" claim) for made-up users: with roles or none, expired, or
// for another audience. It keeps its key in memory and listens on
// loopback only; `loam dev issuer` runs the same issuer as a process for
// development. It is no identity provider: point deployed services at
// Keycloak or any OIDC provider.
//
// Everything here is safe for concurrent use and cleans up after itself
// through t.Cleanup.
package loamtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/internal/devissuer"
)

// Issuer is a local OpenID Connect issuer that mints access tokens.
type Issuer struct {
	d *devissuer.Issuer
}

// Client is an OAuth client that may use the issuer's client credentials
// grant, as a service calling another does with
// authn.NewClientCredentials.
type Client struct {
	// ID and Secret authenticate the client at the token endpoint.
	ID, Secret string
	// Roles and Scopes go into the tokens the client receives.
	Roles, Scopes []string
}

// NewIssuer starts an issuer whose tokens are for audience, with clients
// for the client credentials grant, and stops it when the test ends.
func NewIssuer(t testing.TB, audience string, clients ...Client) *Issuer {
	t.Helper()
	i, err := StartIssuer(audience, clients...)
	if err != nil {
		t.Fatalf("loamtest: %v", err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}

// StartIssuer starts an issuer outside a test, for a demo or a
// development tool; the caller closes it.
func StartIssuer(audience string, clients ...Client) (*Issuer, error) {
	dc := make([]devissuer.Client, len(clients))
	for i, c := range clients {
		dc[i] = devissuer.Client(c)
	}
	d, err := devissuer.Start(audience, dc...)
	if err != nil {
		return nil, fmt.Errorf("starting the issuer: %w", err)
	}
	return &Issuer{d: d}, nil
}

// Close stops the issuer.
func (i *Issuer) Close() error { return i.d.Close() }

// URL is the issuer's identifier (the iss of its tokens) and the base of
// its endpoints; its token endpoint is URL + "/token".
func (i *Issuer) URL() string { return i.d.URL }

// Audience is the aud of the issuer's tokens.
func (i *Issuer) Audience() string { return i.d.Audience() }

// AuthnConfig returns an authn section that trusts this issuer, for the
// configuration of the server under test.
func (i *Issuer) AuthnConfig() authn.Config {
	return authn.Config{
		Issuers:                []authn.IssuerConfig{{URL: i.d.URL, Audiences: []string{i.d.Audience()}}},
		RequireAccessTokenType: true,
		Leeway:                 5 * time.Second,
	}
}

// TokenOption shapes a token that Token mints.
type TokenOption interface{ apply(*devissuer.Token) }

type tokenOption func(*devissuer.Token)

func (f tokenOption) apply(t *devissuer.Token) { f(t) }

// Roles puts roles in the token's "roles" claim. Without it the token
// carries no roles claim at all.
func Roles(roles ...string) TokenOption {
	return tokenOption(func(t *devissuer.Token) { t.Roles = append([]string{}, roles...) })
}

// Scopes puts scopes in the token's "scope" claim.
func Scopes(scopes ...string) TokenOption {
	return tokenOption(func(t *devissuer.Token) { t.Scopes = append(t.Scopes, scopes...) })
}

// ValidFor makes the token valid for d from now; the default is an hour.
func ValidFor(d time.Duration) TokenOption {
	return tokenOption(func(t *devissuer.Token) { t.TTL = d })
}

// Expired makes a token that expired an hour ago.
func Expired() TokenOption {
	return tokenOption(func(t *devissuer.Token) { t.IssuedAt, t.TTL = time.Now().Add(-2*time.Hour), time.Hour })
}

// ForAudience makes a token for another audience, as a token meant for
// another service is.
func ForAudience(aud string) TokenOption {
	return tokenOption(func(t *devissuer.Token) { t.Audience = aud })
}

// Token mints an access token for subject, failing the test if it
// cannot.
func (i *Issuer) Token(t testing.TB, subject string, opts ...TokenOption) string {
	t.Helper()
	tok, err := i.Mint(subject, opts...)
	if err != nil {
		t.Fatalf("loamtest: %v", err)
	}
	return tok
}

// Mint mints an access token for subject.
func (i *Issuer) Mint(subject string, opts ...TokenOption) (string, error) {
	spec := devissuer.Token{Subject: subject}
	for _, o := range opts {
		o.apply(&spec)
	}
	tok, err := i.d.MintToken(spec)
	if err != nil {
		return "", fmt.Errorf("minting a token for %s: %w", subject, err)
	}
	return tok, nil
}

// bearer is per-RPC credentials that send a fixed token.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: the test server listens on loopback.
func (bearer) RequireTransportSecurity() bool { return false }
