package cache

import (
	"errors"
	"fmt"
)

// Sentinel errors. Compare with errors.Is.
var (
	// ErrNotFound is returned by a loader to say that the source has no
	// value for the key. The cache remembers the answer for the negative
	// TTL and returns ErrNotFound from GetOrLoad and Get until then.
	ErrNotFound = errors.New("cache: not found")
	// ErrMiss is returned by Get when neither tier holds the key.
	ErrMiss = errors.New("cache: miss")
	// ErrLoaderPanic wraps the value of a loader's panic. The waiters of the
	// load get it too; the stack goes to the log and the span.
	ErrLoaderPanic = errors.New("cache: loader panicked")
	// ErrClosed is returned by every call on a Store, or on a Cache of it,
	// after Store.Close.
	ErrClosed = errors.New("cache: store closed")
	// ErrUnavailable is wrapped by the error of Store.Check while Redis
	// cannot be used.
	ErrUnavailable = errors.New("cache: redis unavailable")
	// ErrInvalidConfig is wrapped by every configuration error of Open and
	// New.
	ErrInvalidConfig = errors.New("cache: invalid configuration")
)

// OutageError is the error of Store.Check while the shared tier cannot be
// used. It wraps ErrUnavailable and the cause.
type OutageError struct {
	cause    error
	degraded bool
}

// Error says that Redis is unavailable, and why.
func (e *OutageError) Error() string {
	mode := "not ready"
	if e.degraded {
		mode = "degraded"
	}
	return fmt.Sprintf("cache: redis unavailable (%s): %v", mode, e.cause)
}

// Unwrap returns ErrUnavailable and the cause.
func (e *OutageError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }

// Degraded reports whether the configuration (cache.redis.outage) says
// that an outage only degrades the service, which then stays ready and
// serves from the process and the loaders. When false, the service should
// report itself not ready.
func (e *OutageError) Degraded() bool { return e.degraded }
