package config

import (
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
)

// redacted is what a Secret prints instead of its value.
const redacted = "[redacted]"

// Secret is a configuration string that never prints: every fmt verb,
// encoding/json, encoding.TextMarshaler and slog show "[redacted]". Its
// value is read only through Reveal.
//
// In configuration a Secret is written as a plain string (from a file, an
// environment variable or a flag), or as "file:/path/to/file" to read a
// mounted secret: the file is read when the configuration is loaded (and on
// every reload), one trailing newline is trimmed, and a file that cannot be
// read is a load error naming the key and the path, never an empty secret.
// Relative paths are relative to the working directory.
//
// The zero Secret is empty. A Secret is immutable and safe for concurrent
// use; copies share the value. It compares with Equal (go-cmp uses it), not
// with ==. Marshalling is one-way: what a Secret marshals to does not
// unmarshal to the value.
type Secret struct {
	// v is a pointer so that even printers that bypass the methods (fmt on
	// an unexported field, %v of a reflect.Value) show an address, not the
	// value.
	v *string
}

// NewSecret returns a Secret holding v.
func NewSecret(v string) Secret { return Secret{v: &v} }

// Reveal returns the secret value. It is the only way to read it.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// Equal reports whether s and o hold the same value, in constant time.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns `config.Secret("[redacted]")`.
func (s Secret) GoString() string { return `config.Secret("[redacted]")` }

// Format writes "[redacted]" for every verb, quoted for %q and as GoString
// for %#v.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'q':
		_, _ = io.WriteString(f, `"`+redacted+`"`)
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, s.GoString())
	default:
		_, _ = io.WriteString(f, redacted)
	}
}

// MarshalJSON returns the JSON string "[redacted]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes slog print "[redacted]".
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
