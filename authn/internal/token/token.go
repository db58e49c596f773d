// Package token verifies compact JWS access tokens against a set of trusted
// issuers: size, structure, header, signature and claims, in that order,
// reporting each failure with a stable reason code.
package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/loamhq/loam/authn/internal/claims"
	"github.com/loamhq/loam/authn/internal/keys"
)

// Reason codes, stable: they are metric attribute values.
const (
	ReasonMissing         = "missing"
	ReasonTooLarge        = "too_large"
	ReasonMalformed       = "malformed"
	ReasonAlgorithm       = "algorithm"
	ReasonHeader          = "header"
	ReasonIssuer          = "issuer"
	ReasonUnknownKey      = "unknown_key"
	ReasonUnavailable     = "unavailable"
	ReasonSignature       = "signature"
	ReasonExpired         = "expired"
	ReasonNotYetValid     = "not_yet_valid"
	ReasonAudience        = "audience"
	ReasonAuthorizedParty = "azp"
	ReasonClaims          = "claims"
	ReasonCertificate     = "certificate"
	ReasonLifetime        = "lifetime"
)

// Error is a verification failure. Detail never contains the token.
type Error struct {
	Reason string
	Detail string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Detail }

func fail(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Issuer is one trusted issuer.
type Issuer struct {
	URL               string
	Audiences         []string
	AuthorizedParties []string // empty: azp is not checked
	Keys              *keys.Set
	Mapper            claims.Mapper
}

// Verifier checks tokens. Its fields must not change after the first call;
// then it is safe for concurrent use.
type Verifier struct {
	Issuers      map[string]*Issuer
	Algorithms   []jose.SignatureAlgorithm
	Leeway       time.Duration
	MaxBytes     int
	RequireATJWT bool
	// MaxLifetime refuses tokens valid for longer: exp minus iat, or exp
	// minus now without iat. Zero means no limit.
	MaxLifetime time.Duration
	Now         func() time.Time
}

// Result is a verified token.
type Result struct {
	Issuer, Subject, ClientID string
	Audiences                 []string
	Expiry                    time.Time
	Mapped                    claims.Mapped
	Claims                    map[string]any
	Payload                   []byte
	// Key is the issuer's key that verified the signature.
	Key *keys.Ref
}

// forbiddenHeaders name a key or a key source inside the token itself, or
// extensions we do not implement; Loam trusts only the issuer's JWKS.
var forbiddenHeaders = []jose.HeaderKey{"jku", "x5u", "crit"}

// Verify checks raw and returns its claims. Errors are *Error, or the
// context's error when ctx ends while keys are being fetched.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Result, error) {
	if len(raw) > v.MaxBytes {
		return nil, fail(ReasonTooLarge, "token of %d bytes exceeds the limit of %d", len(raw), v.MaxBytes)
	}
	if err := canonical(raw); err != nil {
		return nil, err
	}
	jws, err := jose.ParseSignedCompact(raw, v.Algorithms)
	if err != nil {
		return nil, v.classify(raw, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fail(ReasonMalformed, "%d signatures, want 1", len(jws.Signatures))
	}
	h := jws.Signatures[0].Header
	if err := v.checkHeader(h); err != nil {
		return nil, err
	}
	payload := jws.UnsafePayloadWithoutVerification()
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil || m == nil {
		return nil, fail(ReasonClaims, "payload is not a JSON object")
	}
	iss, err := claims.String(m, "iss")
	if err != nil {
		return nil, fail(ReasonClaims, "%v", err)
	}
	is, ok := v.Issuers[iss]
	if !ok {
		return nil, fail(ReasonIssuer, "issuer %q is not trusted", iss)
	}
	candidates, err := is.Keys.Lookup(ctx, h.KeyID, h.Algorithm)
	switch {
	case err != nil && ctx.Err() != nil:
		// The caller's own context ended. A fetch that timed out on its
		// own is the issuer's failure, not the caller's, and is below.
		return nil, ctx.Err()
	case errors.Is(err, keys.ErrUnavailable):
		return nil, fail(ReasonUnavailable, "keys of %q: %v", iss, err)
	case err != nil:
		return nil, fail(ReasonUnknownKey, "issuer %q has no %s key with kid %q", iss, h.Algorithm, h.KeyID)
	}
	key := verifying(jws, candidates)
	if key == nil {
		return nil, fail(ReasonSignature, "signature does not verify with %s key %q of %q", h.Algorithm, h.KeyID, iss)
	}
	r, err := v.checkClaims(is, m, payload)
	if err != nil {
		return nil, err
	}
	r.Key = is.Keys.RefOf(key)
	return r, nil
}

// verifying returns the candidate key that verifies the signature, or nil.
func verifying(jws *jose.JSONWebSignature, candidates []*jose.JSONWebKey) *jose.JSONWebKey {
	for _, k := range candidates {
		if _, err := jws.Verify(k); err == nil {
			return k
		}
	}
	return nil
}

// canonical refuses a compact JWS that is not spelled the one way RFC 7515
// allows: three segments of unpadded base64url (section 2), with no
// whitespace and no set bits past the last byte, so that one token has one
// spelling and one cache entry. Go's decoder would otherwise skip CR and LF
// and ignore trailing bits.
func canonical(raw string) *Error {
	seg, start := 0, 0
	for i := 0; i <= len(raw); i++ {
		if i < len(raw) && raw[i] != '.' {
			if !isBase64URL(raw[i]) {
				return fail(ReasonMalformed, "byte %d is not base64url", i)
			}
			continue
		}
		if err := canonicalSegment(raw[start:i], seg); err != nil {
			return err
		}
		seg++
		start = i + 1
	}
	if seg != 3 {
		return fail(ReasonMalformed, "%d segments, want 3", seg)
	}
	return nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// canonicalSegment checks the length and the unused low bits of the last
// character of one base64url segment.
func canonicalSegment(s string, n int) *Error {
	if len(s) == 0 {
		if n > 0 {
			return nil // an empty payload or signature is spelled one way
		}
		return fail(ReasonMalformed, "segment %d is empty", n+1)
	}
	var unused byte
	switch len(s) % 4 {
	case 1:
		return fail(ReasonMalformed, "segment %d has a length no base64url encoding has", n+1)
	case 2:
		unused = 0x0f
	case 3:
		unused = 0x03
	}
	if base64Value(s[len(s)-1])&unused != 0 {
		return fail(ReasonMalformed, "segment %d is not canonical base64url: its last character has unused bits set", n+1)
	}
	return nil
}

func base64Value(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A'
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26
	case '0' <= c && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	}
	return 63
}

func (v *Verifier) checkHeader(h jose.Header) error {
	if h.JSONWebKey != nil {
		return fail(ReasonHeader, "embedded jwk header is not accepted")
	}
	for _, name := range forbiddenHeaders {
		if _, ok := h.ExtraHeaders[name]; ok {
			return fail(ReasonHeader, "%s header is not accepted", name)
		}
	}
	typ, present := h.ExtraHeaders["typ"]
	if !present {
		if v.RequireATJWT {
			return fail(ReasonHeader, "typ header is missing, want at+jwt")
		}
		return nil
	}
	s, _ := typ.(string)
	s = strings.TrimPrefix(strings.ToLower(s), "application/")
	switch {
	case s == "at+jwt":
		return nil
	case s == "jwt" && !v.RequireATJWT:
		return nil
	}
	return fail(ReasonHeader, "typ %q is not accepted for an access token", typ)
}

// classify says why go-jose could not parse raw. It runs on the failure
// path only, on input no larger than MaxBytes.
func (v *Verifier) classify(raw string, err error) *Error {
	if strings.HasPrefix(strings.TrimSpace(raw), "{") {
		return fail(ReasonMalformed, "JWS JSON serialization is not accepted")
	}
	if n := strings.Count(raw, ".") + 1; n != 3 {
		return fail(ReasonMalformed, "%d segments, want 3", n)
	}
	head, _, _ := strings.Cut(raw, ".")
	b, derr := base64.RawURLEncoding.DecodeString(head)
	if derr != nil {
		return fail(ReasonMalformed, "header is not base64url")
	}
	var h struct {
		Alg any `json:"alg"`
	}
	if json.Unmarshal(b, &h) != nil {
		return fail(ReasonMalformed, "header is not a JSON object")
	}
	alg, _ := h.Alg.(string)
	if !slices.Contains(v.Algorithms, jose.SignatureAlgorithm(alg)) {
		return fail(ReasonAlgorithm, "alg %q is not allowed", h.Alg)
	}
	return fail(ReasonMalformed, "%v", err)
}

func (v *Verifier) checkClaims(is *Issuer, m map[string]any, payload []byte) (*Result, error) {
	now := v.Now()
	exp, ok, err := date(m, "exp")
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, fail(ReasonClaims, "exp is required")
	case !now.Before(exp.Add(v.Leeway)):
		return nil, fail(ReasonExpired, "expired at %s", exp.UTC().Format(time.RFC3339))
	}
	var iat time.Time
	for _, name := range []string{"nbf", "iat"} {
		t, ok, err := date(m, name)
		if err != nil {
			return nil, err
		}
		if ok && t.After(now.Add(v.Leeway)) {
			return nil, fail(ReasonNotYetValid, "%s %s is in the future", name, t.UTC().Format(time.RFC3339))
		}
		if ok && name == "iat" {
			iat = t
		}
	}
	if v.MaxLifetime > 0 {
		from := iat
		if from.IsZero() {
			from = now
		}
		if life := exp.Sub(from); life > v.MaxLifetime+v.Leeway {
			return nil, fail(ReasonLifetime, "valid for %s, longer than the %s allowed", life.Round(time.Second), v.MaxLifetime)
		}
	}
	aud, ok := m["aud"]
	if !ok {
		return nil, fail(ReasonAudience, "aud is missing")
	}
	auds, err := claims.Strings(aud, false)
	if err != nil {
		return nil, fail(ReasonClaims, "claim \"aud\" %v", err)
	}
	if !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(is.Audiences, a) }) {
		return nil, fail(ReasonAudience, "audience %q has none of %q", auds, is.Audiences)
	}
	r := &Result{Issuer: is.URL, Audiences: auds, Expiry: exp, Claims: m, Payload: payload}
	var azp string
	for _, c := range []struct {
		name string
		dst  *string
	}{{"sub", &r.Subject}, {"azp", &azp}, {"client_id", &r.ClientID}} {
		if *c.dst, err = claims.String(m, c.name); err != nil {
			return nil, fail(ReasonClaims, "%v", err)
		}
	}
	if r.Subject == "" {
		return nil, fail(ReasonClaims, "sub is required")
	}
	if len(is.AuthorizedParties) > 0 && !slices.Contains(is.AuthorizedParties, azp) {
		return nil, fail(ReasonAuthorizedParty, "azp %q is not one of %q", azp, is.AuthorizedParties)
	}
	if r.ClientID == "" {
		r.ClientID = azp
	}
	if r.Mapped, err = is.Mapper.Map(m); err != nil {
		return nil, fail(ReasonClaims, "%v", err)
	}
	return r, nil
}

// maxSeconds keeps NumericDates where float64 to int64 conversion is exact
// enough and time.Time arithmetic cannot overflow (about year 36812).
const maxSeconds = 1 << 40

func date(m map[string]any, name string) (time.Time, bool, error) {
	n, ok, err := claims.Number(m, name)
	if err != nil {
		return time.Time{}, false, fail(ReasonClaims, "%v", err)
	}
	if !ok {
		return time.Time{}, false, nil
	}
	if n < 0 || n > maxSeconds {
		return time.Time{}, false, fail(ReasonClaims, "claim %q is out of range", name)
	}
	sec, frac := math.Modf(n)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}
