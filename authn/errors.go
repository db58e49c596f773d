package authn

import (
	"errors"

	"github.com/loamhq/loam/authn/internal/token"
)

// Error is an authentication failure. Reason is a short stable code, the
// same as the sentinel it matches and the "reason" attribute of the
// loam.authn.failures counter; Detail explains it for the log and may quote
// claims from the token, but never the token itself. Neither is sent to the
// caller: the interceptors answer codes.Unauthenticated with a generic
// message.
//
// Use errors.Is with the sentinels below to test the reason.
type Error struct {
	Reason string
	Detail string
}

// Error returns "authn: <reason>: <detail>".
func (e *Error) Error() string {
	if e.Detail == "" {
		return "authn: " + e.Reason
	}
	return "authn: " + e.Reason + ": " + e.Detail
}

// Is reports whether target is an *Error with the same Reason and no
// Detail, which is what the sentinels are.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Detail == "" && t.Reason == e.Reason
}

// Sentinels, one per reason. Compare with errors.Is; never modify them.
var (
	// ErrMissing: the call carried no credentials (no bearer token and no
	// verified client certificate).
	ErrMissing = &Error{Reason: token.ReasonMissing}
	// ErrTooLarge: the token exceeds Config.MaxTokenBytes; it was not parsed.
	ErrTooLarge = &Error{Reason: token.ReasonTooLarge}
	// ErrMalformed: not a compact JWS with three canonical, unpadded
	// base64url segments (no whitespace, no unused bits set) and a JSON
	// header, or not a bearer authorization value.
	ErrMalformed = &Error{Reason: token.ReasonMalformed}
	// ErrAlgorithm: the header's alg is not in Config.Algorithms (this
	// includes "none" and every HMAC algorithm).
	ErrAlgorithm = &Error{Reason: token.ReasonAlgorithm}
	// ErrHeader: the header carries jwk, jku, x5u or crit, or a typ other
	// than at+jwt or JWT (only at+jwt with Config.RequireAccessTokenType).
	ErrHeader = &Error{Reason: token.ReasonHeader}
	// ErrIssuer: iss is not one of Config.Issuers.
	ErrIssuer = &Error{Reason: token.ReasonIssuer}
	// ErrUnknownKey: the issuer's key set has no key with the token's kid,
	// even after a refetch (or a refetch was not due yet).
	ErrUnknownKey = &Error{Reason: token.ReasonUnknownKey}
	// ErrUnavailable: discovery or the JWKS endpoint of the issuer failed and
	// the token's key is not known from an earlier fetch. It is the one
	// reason that points at the server side rather than the caller.
	ErrUnavailable = &Error{Reason: token.ReasonUnavailable}
	// ErrSignature: the signature does not verify with the key named.
	ErrSignature = &Error{Reason: token.ReasonSignature}
	// ErrExpired: exp plus Config.Leeway is not after the current time.
	ErrExpired = &Error{Reason: token.ReasonExpired}
	// ErrNotYetValid: nbf or iat is later than the current time plus
	// Config.Leeway.
	ErrNotYetValid = &Error{Reason: token.ReasonNotYetValid}
	// ErrAudience: aud is missing or names none of the issuer's audiences.
	ErrAudience = &Error{Reason: token.ReasonAudience}
	// ErrAuthorizedParty: azp is not one of the issuer's authorized parties.
	ErrAuthorizedParty = &Error{Reason: token.ReasonAuthorizedParty}
	// ErrClaims: a required claim (exp, sub) is missing or a claim has the
	// wrong JSON type.
	ErrClaims = &Error{Reason: token.ReasonClaims}
	// ErrCertificate: the verified client certificate carries more than one
	// SPIFFE ID, or neither a SPIFFE ID nor a subject.
	ErrCertificate = &Error{Reason: token.ReasonCertificate}
	// ErrLifetime: the token is valid for longer than
	// Config.MaxTokenLifetime.
	ErrLifetime = &Error{Reason: token.ReasonLifetime}
)

// ErrInvalidConfig is wrapped by the errors of Config.Validate and of the
// constructors when their input is invalid.
var ErrInvalidConfig = errors.New("authn: invalid configuration")

// publicError turns an engine error into an *Error; context errors and
// others pass through.
func publicError(err error) error {
	var te *token.Error
	if errors.As(err, &te) {
		return &Error{Reason: te.Reason, Detail: te.Detail}
	}
	return err
}
