// Package keys keeps the signing keys of one token issuer: it discovers the
// issuer's JWKS endpoint with go-oidc, fetches the key set, and refetches it
// when a token names a key it does not know, at most once per interval, with
// concurrent callers sharing one fetch.
package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

var (
	// ErrUnknownKey means no key of the set matches, and refetching is not
	// allowed yet or did not bring one.
	ErrUnknownKey = errors.New("no key with this id")
	// ErrUnavailable means discovery or the JWKS endpoint failed, and the
	// key asked for is not known from an earlier fetch.
	ErrUnavailable = errors.New("issuer keys unavailable")
)

// maxJWKSBytes bounds the JWKS and discovery documents read from the network.
const maxJWKSBytes = 1 << 20

// fetchTimeout bounds one discovery plus JWKS fetch. The fetch runs detached
// from the caller that started it, so that the callers sharing it are not
// failed by one caller's cancellation.
const fetchTimeout = 10 * time.Second

// Config describes one issuer's key source.
type Config struct {
	// Issuer is the issuer URL; discovery reads Issuer+"/.well-known/openid-configuration".
	Issuer string
	// JWKSURL, when set, skips discovery.
	JWKSURL string
	// Interval is the least time between two fetches.
	Interval time.Duration
	// MaxAge is how long a fetched key set is used before it is refetched
	// in the background, so that keys the issuer removed stop verifying.
	// Zero means never.
	MaxAge time.Duration
	// Client makes the HTTP requests.
	Client *http.Client
	// Now is the clock.
	Now func() time.Time
	// Log receives a line for every key of a fetched set that is skipped
	// (too weak, or not for verifying). Nil discards them.
	Log *slog.Logger
}

// minRSABits is the smallest RSA modulus accepted (NIST SP 800-131A,
// RFC 7518 section 3.3).
const minRSABits = 2048

// Set is the key set of one issuer. It is safe for concurrent use; the zero
// value is not usable, use New.
type Set struct {
	cfg Config

	ring atomic.Pointer[ring] // nil until the first successful fetch

	mu      sync.Mutex
	jwksURL string     // discovered or configured; guarded by mu
	next    time.Time  // earliest next fetch; guarded by mu
	call    *fetchCall // the fetch in flight, or nil; guarded by mu
	lastErr error      // the error of the last fetch, or nil; guarded by mu
}

type ring struct {
	byID    map[string]*jose.JSONWebKey
	all     []*jose.JSONWebKey
	fetched time.Time
	skipped []skippedKey
}

type skippedKey struct{ kid, reason string }

type fetchCall struct {
	done chan struct{}
	err  error
}

// New returns a Set that fetches lazily, on the first lookup.
func New(cfg Config) *Set {
	return &Set{cfg: cfg, jwksURL: cfg.JWKSURL}
}

// Lookup returns the keys that may have signed a token with header kid and
// alg: the key with that id, or, when kid is empty, every key usable with
// alg. When none is known it refetches the set, at most once per interval,
// and looks again. It fails with ErrUnknownKey or ErrUnavailable (wrapping
// the fetch error), or with ctx.Err() when ctx ends while it waits for a
// fetch; the fetch itself goes on for the other callers.
func (s *Set) Lookup(ctx context.Context, kid, alg string) ([]*jose.JSONWebKey, error) {
	if keys := s.find(kid, alg); len(keys) > 0 {
		s.refreshIfOld()
		return keys, nil
	}
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	if keys := s.find(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	return nil, ErrUnknownKey
}

// Warm fetches the key set unless it holds one already, subject to the
// same interval as Lookup.
func (s *Set) Warm(ctx context.Context) error {
	if s.ring.Load() != nil {
		return nil
	}
	return s.refresh(ctx)
}

func (s *Set) find(kid, alg string) []*jose.JSONWebKey {
	r := s.ring.Load()
	if r == nil {
		return nil
	}
	if kid != "" {
		if k, ok := r.byID[kid]; ok && usable(k, alg) {
			return []*jose.JSONWebKey{k}
		}
		return nil
	}
	var keys []*jose.JSONWebKey
	for _, k := range r.all {
		if usable(k, alg) {
			keys = append(keys, k)
		}
	}
	return keys
}

// usable reports whether k may verify a signature made with alg: its own
// alg, when it states one, must agree, and its type must fit the algorithm.
func usable(k *jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return strings.HasPrefix(alg, "ES")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// refreshIfOld starts a background refetch when the key set is older than
// MaxAge. The caller goes on with the keys it found; the new set replaces
// them when it arrives, and a failed refetch keeps them.
func (s *Set) refreshIfOld() {
	r := s.ring.Load()
	if s.cfg.MaxAge <= 0 || r == nil || s.cfg.Now().Sub(r.fetched) < s.cfg.MaxAge {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.cfg.Now(); s.call == nil && !now.Before(s.next) {
		s.next = now.Add(s.cfg.Interval)
		s.call = &fetchCall{done: make(chan struct{})}
		go s.fetch(context.Background(), s.call)
	}
}

// refresh starts a fetch, or joins the one in flight, and waits for it. It
// fails fast when the last fetch started less than an interval ago.
func (s *Set) refresh(ctx context.Context) error {
	s.mu.Lock()
	c := s.call
	if c == nil {
		now := s.cfg.Now()
		if now.Before(s.next) {
			err := s.lastErr
			s.mu.Unlock()
			if err != nil {
				return fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			return ErrUnknownKey
		}
		s.next = now.Add(s.cfg.Interval)
		c = &fetchCall{done: make(chan struct{})}
		s.call = c
		go s.fetch(context.WithoutCancel(ctx), c)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, c.err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Set) fetch(ctx context.Context, c *fetchCall) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	r, jwksURL, err := s.load(ctx)
	s.mu.Lock()
	if err == nil {
		r.fetched = s.cfg.Now()
		s.ring.Store(r)
		s.jwksURL = jwksURL
	}
	s.lastErr, c.err, s.call = err, err, nil
	s.mu.Unlock()
	close(c.done)
}

func (s *Set) load(ctx context.Context) (*ring, string, error) {
	s.mu.Lock()
	jwksURL := s.jwksURL
	s.mu.Unlock()
	if jwksURL == "" {
		// go-oidc checks that the document names the issuer we asked for.
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, s.cfg.Client), s.cfg.Issuer)
		if err != nil {
			return nil, "", fmt.Errorf("discovery: %w", err)
		}
		var doc struct {
			JWKSURL string `json:"jwks_uri"`
		}
		if err := p.Claims(&doc); err != nil || doc.JWKSURL == "" {
			return nil, "", errors.New("discovery: no jwks_uri")
		}
		jwksURL = doc.JWKSURL
	}
	r, err := s.get(ctx, jwksURL)
	if err != nil {
		return nil, "", err
	}
	if s.cfg.Log != nil {
		for _, skip := range r.skipped {
			s.cfg.Log.Warn("issuer key skipped", "issuer", s.cfg.Issuer, "kid", skip.kid, "reason", skip.reason)
		}
	}
	return r, jwksURL, nil
}

func (s *Set) get(ctx context.Context, url string) (*ring, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s returned %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks: document larger than %d bytes", maxJWKSBytes)
	}
	return parse(body)
}

// parse keeps the public signature keys of a JWKS document and skips the
// rest (encryption keys, symmetric keys, private keys, key types go-jose does
// not know, RSA keys under 2048 bits, keys whose key_ops do not include
// verify), so that one odd key does not hide the others.
func parse(body []byte) (*ring, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	r := &ring{byID: make(map[string]*jose.JSONWebKey, len(doc.Keys))}
	for _, raw := range doc.Keys {
		k := new(jose.JSONWebKey)
		if err := k.UnmarshalJSON(raw); err != nil || !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if bits := pub.N.BitLen(); bits < minRSABits {
				r.skipped = append(r.skipped, skippedKey{k.KeyID, fmt.Sprintf("RSA key of %d bits, under %d", bits, minRSABits)})
				continue
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		if ops := keyOps(raw); ops != nil && !slices.Contains(ops, "verify") {
			r.skipped = append(r.skipped, skippedKey{k.KeyID, fmt.Sprintf("key_ops %q do not include verify", ops)})
			continue
		}
		r.all = append(r.all, k)
		if k.KeyID != "" {
			r.byID[k.KeyID] = k
		}
	}
	return r, nil
}

// keyOps returns the key_ops member of a JWK (RFC 7517 section 4.3), which
// go-jose does not read, or nil when it is absent. A key_ops that is not an
// array of strings gives an empty list, which permits nothing.
func keyOps(raw json.RawMessage) []string {
	var k struct {
		Ops json.RawMessage `json:"key_ops"`
	}
	if json.Unmarshal(raw, &k) != nil || k.Ops == nil {
		return nil
	}
	var ops []string
	if json.Unmarshal(k.Ops, &ops) != nil || ops == nil {
		return []string{}
	}
	return ops
}

// Ref remembers the key that verified a token, so that a cached
// verification can ask whether the issuer still publishes that key.
type Ref struct {
	set  *Set
	key  *jose.JSONWebKey
	seen atomic.Pointer[ring] // the newest ring known to hold key
}

// RefOf returns a Ref to k, a key that Lookup returned.
func (s *Set) RefOf(k *jose.JSONWebKey) *Ref {
	r := &Ref{set: s, key: k}
	r.seen.Store(s.ring.Load())
	return r
}

// Current reports whether the issuer's key set, as last fetched, still holds
// the key: the same key id with the same public key, or for a key without
// an id, an equal public key. It allocates nothing and takes no lock while
// the set has not been refetched.
func (r *Ref) Current() bool {
	cur := r.set.ring.Load()
	if cur == r.seen.Load() {
		return true
	}
	held := false
	if r.key.KeyID != "" {
		k, ok := cur.byID[r.key.KeyID]
		held = ok && sameKey(k, r.key)
	} else {
		held = slices.ContainsFunc(cur.all, func(k *jose.JSONWebKey) bool { return sameKey(k, r.key) })
	}
	if held {
		r.seen.Store(cur)
	}
	return held
}

func sameKey(a, b *jose.JSONWebKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.Key.(equaler)
	return ok && e.Equal(b.Key)
}

// Status reports, without fetching, whether the set holds keys, when they
// were fetched, and the error of the last fetch (nil when it succeeded).
func (s *Set) Status() (hasKeys bool, fetched time.Time, lastErr error) {
	if r := s.ring.Load(); r != nil {
		hasKeys, fetched = true, r.fetched
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return hasKeys, fetched, s.lastErr
}
