// Package devissuer runs a local OpenID Connect issuer for development and
// tests: discovery, a JWKS, the client credentials grant, and access tokens
// minted on demand for made-up users, all in the RFC 9068 profile (typ
// at+jwt, client_id, scope, and roles in a "roles" claim).
//
// It lets a Loam service authenticate real tokens on a machine with no
// identity provider. It is not an identity provider: it keeps its signing
// key in memory, mints a token for anyone who asks Mint, and listens on
// loopback only. Point production services at Keycloak or any OIDC
// provider instead.
package devissuer

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Client is an OAuth client that may use the client credentials grant.
type Client struct {
	// ID and Secret authenticate the client at the token endpoint.
	ID, Secret string
	// Roles and Scopes go into the tokens the client receives.
	Roles, Scopes []string
}

// Issuer is a running issuer. It is safe for concurrent use.
type Issuer struct {
	// URL is the issuer identifier, the iss of its tokens, and the base of
	// its endpoints.
	URL string

	audience string
	key      *rsa.PrivateKey
	keyID    string
	clients  map[string]Client
	srv      *http.Server
}

// Start starts an issuer on a free loopback port whose tokens are for
// audience. Close it when done.
func Start(audience string, clients ...Client) (*Issuer, error) {
	return StartOn("127.0.0.1:0", audience, clients...)
}

// StartOn is Start on addr, which must be a loopback address: the issuer
// mints tokens for anyone who asks.
func StartOn(addr, audience string, clients ...Client) (*Issuer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("devissuer: %q is not a loopback address; a development issuer never listens beyond this machine", addr)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("devissuer: generating the signing key: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	i := &Issuer{
		URL:      "http://" + ln.Addr().String(),
		audience: audience,
		key:      key,
		keyID:    "dev-" + rand.Text()[:8],
		clients:  map[string]Client{},
	}
	for _, c := range clients {
		i.clients[c.ID] = c
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET /keys", i.keys)
	mux.HandleFunc("POST /token", i.token)
	i.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go i.srv.Serve(ln)
	return i, nil
}

// Close stops the issuer.
func (i *Issuer) Close() error { return i.srv.Shutdown(context.Background()) }

// Audience is the aud of the issuer's tokens.
func (i *Issuer) Audience() string { return i.audience }

// Clients returns the clients of the client credentials grant.
func (i *Issuer) Clients() []Client {
	out := make([]Client, 0, len(i.clients))
	for _, c := range i.clients {
		out = append(out, c)
	}
	return out
}

// Mint returns an access token for subject with roles, valid for ttl.
func (i *Issuer) Mint(subject string, roles []string, ttl time.Duration) (string, error) {
	return i.MintToken(Token{Subject: subject, Roles: roles, TTL: ttl})
}

// Token describes a token to mint.
type Token struct {
	// Subject is the sub claim.
	Subject string
	// Roles go into the "roles" claim; nil leaves the claim out.
	Roles []string
	// Scopes go into the "scope" claim, space-separated.
	Scopes []string
	// TTL is how long the token is valid from IssuedAt; zero means an hour.
	TTL time.Duration
	// IssuedAt is the iat claim; zero means now. A token issued two hours
	// ago with a TTL of an hour is expired.
	IssuedAt time.Time
	// Audience replaces the issuer's audience, to mint a token for another
	// service.
	Audience string
	// ClientID is the client_id claim; empty means "loam-dev".
	ClientID string
}

// MintToken returns the access token t describes.
func (i *Issuer) MintToken(t Token) (string, error) {
	claims := map[string]any{"sub": t.Subject, "client_id": t.ClientID}
	if t.ClientID == "" {
		claims["client_id"] = "loam-dev"
	}
	if t.Roles != nil {
		claims["roles"] = t.Roles
	}
	if len(t.Scopes) > 0 {
		claims["scope"] = strings.Join(t.Scopes, " ")
	}
	if t.Audience != "" {
		claims["aud"] = t.Audience
	}
	if t.TTL == 0 {
		t.TTL = time.Hour
	}
	return i.signAt(claims, t.IssuedAt, t.TTL)
}

func (i *Issuer) sign(claims map[string]any, ttl time.Duration) (string, error) {
	return i.signAt(claims, time.Time{}, ttl)
}

func (i *Issuer) signAt(claims map[string]any, iat time.Time, ttl time.Duration) (string, error) {
	if iat.IsZero() {
		iat = time.Now()
	}
	claims["iss"] = i.URL
	if _, ok := claims["aud"]; !ok {
		claims["aud"] = i.audience
	}
	claims["iat"] = iat.Unix()
	claims["exp"] = iat.Add(ttl).Unix()
	claims["jti"] = rand.Text()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: i.key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", i.keyID))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func (i *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.URL,
		"jwks_uri":                              i.URL + "/keys",
		"token_endpoint":                        i.URL + "/token",
		"grant_types_supported":                 []string{"client_credentials"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
	})
}

func (i *Issuer) keys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: i.key.Public(), KeyID: i.keyID, Algorithm: string(jose.RS256), Use: "sig",
	}}})
}

// token implements the client credentials grant (RFC 6749 section 4.4).
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
	}
	if gt := r.PostFormValue("grant_type"); gt != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	c, known := i.clients[id]
	if !known || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	const ttl = time.Hour
	tok, err := i.sign(map[string]any{
		"sub":       "service-account-" + c.ID,
		"client_id": c.ID,
		"scope":     strings.Join(c.Scopes, " "),
		"roles":     c.Roles,
	}, ttl)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(ttl.Seconds())})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
