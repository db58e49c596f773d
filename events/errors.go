package events

import (
	"errors"

	"github.com/loamhq/loam/events/driver"
)

var (
	// ErrClosed is returned by Publish and Subscribe once the Topic's Bus is
	// closed, and by a driver used after Close.
	ErrClosed = driver.ErrClosed
	// ErrNotEvent is wrapped by NewTopic's error when the message type does
	// not carry a valid loam.options.v1.event option; the error also wraps
	// the *options.Error that says what is wrong.
	ErrNotEvent = errors.New("events: not an event")
	// ErrInvalid is wrapped by the errors of an option or argument that
	// cannot work: a bad topic name, extension name, or policy value.
	ErrInvalid = errors.New("events: invalid argument")
	// ErrMalformed is the reason given when a received message is not a
	// CloudEvent of the topic's type: a missing or wrong attribute, or data
	// that does not decode. Such a message is dead-lettered at once.
	ErrMalformed = errors.New("events: malformed event")
)

// Permanent marks err as a failure that retrying will not fix, such as an
// event that breaks a business rule. A handler that returns it has its
// event dead-lettered at once, without further attempts. errors.Is and
// errors.As see through it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, came from
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
