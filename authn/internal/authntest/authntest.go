// Package authntest runs a local OpenID Connect issuer for authn's tests,
// examples and benchmarks: go-oidc's oidctest server for discovery and the
// JWKS, plus a client-credentials token endpoint, request counters, an
// outage switch, a way to hold the JWKS response, and signing helpers.
package authntest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	jose "github.com/go-jose/go-jose/v4"
)

// Audience is the audience of the tokens Claims makes.
const Audience = "captures-api"

// Client credentials the token endpoint accepts.
const (
	ClientID     = "captures-worker"
	ClientSecret = "s3cret"
)

// Key is a signing key of the issuer.
type Key struct {
	ID      string
	Alg     string
	Private crypto.Signer
}

var (
	keyMu   sync.Mutex
	keyPool = map[string]*Key{}
)

// NewKey returns a key for alg (RS256, ES256 or EdDSA), generated once per
// process for each (id, alg), since RSA generation is slow.
func NewKey(id, alg string) *Key {
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyPool[id+"/"+alg]; ok {
		return k
	}
	var priv crypto.Signer
	var err error
	switch alg {
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		panic("authntest: unsupported alg " + alg)
	}
	if err != nil {
		panic(err)
	}
	k := &Key{ID: id, Alg: alg, Private: priv}
	keyPool[id+"/"+alg] = k
	return k
}

// Issuer is a running test issuer. Close it when done.
type Issuer struct {
	// URL is the issuer identifier and base URL.
	URL string
	// JWKSHits, DiscoveryHits and TokenHits count requests.
	JWKSHits, DiscoveryHits, TokenHits atomic.Int64

	srv  *httptest.Server
	mu   sync.Mutex
	oidc *oidctest.Server
	keys []*Key
	down bool
	hold chan struct{}
}

// Start starts an issuer that publishes the given keys; with none, one
// RS256 key "rsa-1".
func Start(keys ...*Key) *Issuer {
	if len(keys) == 0 {
		keys = []*Key{NewKey("rsa-1", "RS256")}
	}
	i := &Issuer{oidc: &oidctest.Server{Algorithms: []string{"RS256", "ES256", "EdDSA"}}}
	i.srv = httptest.NewServer(http.HandlerFunc(i.serve))
	i.URL = i.srv.URL
	i.oidc.SetIssuer(i.URL)
	i.SetKeys(keys...)
	return i
}

// Close shuts the server down.
func (i *Issuer) Close() {
	i.Release()
	i.srv.Close()
}

// SetKeys replaces the published keys (a key rotation).
func (i *Issuer) SetKeys(keys ...*Key) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = keys
	i.oidc.PublicKeys = nil
	for _, k := range keys {
		i.oidc.PublicKeys = append(i.oidc.PublicKeys, oidctest.PublicKey{PublicKey: k.Private.Public(), KeyID: k.ID, Algorithm: k.Alg})
	}
}

// Key returns the first published key.
func (i *Issuer) Key() *Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[0]
}

// SetDown makes every endpoint answer 503 while down is true.
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.down = down
}

// Hold makes JWKS requests wait until Release.
func (i *Issuer) Hold() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.hold == nil {
		i.hold = make(chan struct{})
	}
}

// Release lets held JWKS requests answer.
func (i *Issuer) Release() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.hold != nil {
		close(i.hold)
		i.hold = nil
	}
}

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/keys":
		i.JWKSHits.Add(1)
	case "/.well-known/openid-configuration":
		i.DiscoveryHits.Add(1)
	case "/token":
		i.TokenHits.Add(1)
	}
	i.mu.Lock()
	down, hold := i.down, i.hold
	i.mu.Unlock()
	if down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if hold != nil && r.URL.Path == "/keys" {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if r.URL.Path == "/token" {
		i.serveToken(w, r)
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.oidc.ServeHTTP(w, r)
}

// serveToken implements the client credentials grant for ClientID.
func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
	}
	if r.PostFormValue("grant_type") != "client_credentials" || id != ClientID || secret != ClientSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	c := i.Claims(map[string]any{"sub": "service-account-" + id, "client_id": id, "scope": r.PostFormValue("scope")})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": i.Sign(c), "token_type": "Bearer", "expires_in": 3600})
}

// Claims returns valid claims for this issuer (iss, sub "alice", aud
// Audience, iat now, exp in an hour) with overrides applied; an override
// of nil deletes the claim.
func (i *Issuer) Claims(overrides map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": i.URL, "sub": "alice", "aud": Audience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// Sign signs claims with the first key.
func (i *Issuer) Sign(claims map[string]any) string {
	return SignWith(i.Key(), nil, claims)
}

// SignWith signs claims with k, adding header fields to the protected
// header (kid is k.ID unless header sets it).
func SignWith(k *Key, header map[string]any, claims map[string]any) string {
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"kid": k.ID}}
	for name, v := range header {
		opts.ExtraHeaders[jose.HeaderKey(name)] = v
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Alg), Key: k.Private}, opts)
	if err != nil {
		panic(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return s
}

// Raw builds a compact token from a header, claims and signature bytes,
// without signing: for forgeries.
func Raw(header, claims map[string]any, sig []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "." + enc(sig)
}
