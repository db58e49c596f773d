package authz

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrInvalidConfig is wrapped by the errors of Config.Validate, of New
	// for a bad configuration, and of SetPolicy.
	ErrInvalidConfig = errors.New("authz: invalid configuration")
	// ErrNoRule is wrapped by the error of New that lists the methods
	// without an access rule.
	ErrNoRule = errors.New("authz: methods without an access rule")
	// ErrInvalidRule is wrapped by the errors of New for a rule that
	// cannot be enforced: a malformed access option, a condition that does
	// not compile or type-check, a condition on a client-streaming method,
	// or a config rule that contradicts the method's proto rule.
	ErrInvalidRule = errors.New("authz: invalid access rule")
	// ErrPermissionDenied is matched (errors.Is) by the error of Check
	// when the principal may not do what it asked.
	ErrPermissionDenied = errors.New("authz: permission denied")
	// ErrUnauthenticated is matched by the error of Check when the
	// context carries no principal.
	ErrUnauthenticated = errors.New("authz: authentication required")
	// ErrNoAuthorizer is returned by Check when the context carries no
	// Authorizer: the interceptors did not run, a programming error.
	ErrNoAuthorizer = errors.New("authz: no Authorizer in the context")
)

// What the caller learns about a refusal; the reason stays on the server.
var (
	permissionDenied = status.New(codes.PermissionDenied, "permission denied")
	unauthenticated  = status.New(codes.Unauthenticated, "authentication required")
)

// deniedError is the error of Check: it matches a sentinel for the
// handler and becomes a generic status on the wire.
type deniedError struct{ d Decision }

func (e *deniedError) Error() string { return "authz: " + e.d.String() }

func (e *deniedError) Unwrap() error {
	if e.d.Reason == ReasonUnauthenticated {
		return ErrUnauthenticated
	}
	return ErrPermissionDenied
}

// GRPCStatus lets status.FromError, and so grpc-go, send the generic
// status.
func (e *deniedError) GRPCStatus() *status.Status { return e.d.status() }
