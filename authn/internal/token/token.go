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
	Now          func() time.Time
}

// Result is a verified token.
type Result struct {
	Issuer, Subject, ClientID string
	Audiences                 []string
	Expiry                    time.Time
	Mapped                    claims.Mapped
	Claims                    map[string]any
	Payload                   []byte
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
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return nil, err
	case errors.Is(err, keys.ErrUnavailable):
		return nil, fail(ReasonUnavailable, "keys of %q: %v", iss, err)
	case err != nil:
		return nil, fail(ReasonUnknownKey, "issuer %q has no %s key with kid %q", iss, h.Algorithm, h.KeyID)
	}
	if !verifies(jws, candidates) {
		return nil, fail(ReasonSignature, "signature does not verify with %s key %q of %q", h.Algorithm, h.KeyID, iss)
	}
	return v.checkClaims(is, m, payload)
}

func verifies(jws *jose.JSONWebSignature, candidates []*jose.JSONWebKey) bool {
	for _, k := range candidates {
		if _, err := jws.Verify(k); err == nil {
			return true
		}
	}
	return false
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
	for _, name := range []string{"nbf", "iat"} {
		t, ok, err := date(m, name)
		if err != nil {
			return nil, err
		}
		if ok && t.After(now.Add(v.Leeway)) {
			return nil, fail(ReasonNotYetValid, "%s %s is in the future", name, t.UTC().Format(time.RFC3339))
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
