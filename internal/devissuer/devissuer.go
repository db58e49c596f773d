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
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("devissuer: generating the signing key: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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

// Mint returns an access token for subject with roles, valid for ttl.
func (i *Issuer) Mint(subject string, roles []string, ttl time.Duration) (string, error) {
	return i.sign(map[string]any{"sub": subject, "client_id": "loam-dev", "roles": roles}, ttl)
}

func (i *Issuer) sign(claims map[string]any, ttl time.Duration) (string, error) {
	now := time.Now()
	claims["iss"] = i.URL
	claims["aud"] = i.audience
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(ttl).Unix()
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
