// Package wire is the byte format of a cache entry in the shared tier: a
// fixed header, then the value as its codec encoded it.
//
//	byte 0     format, 1
//	byte 1     kind: 0 a value, 1 "not found" (a negative entry, no payload)
//	bytes 2-9  fresh-until, Unix milliseconds, big endian
//	bytes 10-  payload
//
// The header lets a reader tell a value from a cached "not found", bound
// its own copy by the writer's freshness, and recognise bytes it cannot
// read (a poisoned entry) before handing them to a codec.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// HeaderLen is the length of the header that precedes the payload.
const HeaderLen = 10

const format = 1

// Kinds of entry.
const (
	KindValue    byte = 0
	KindNotFound byte = 1
)

// ErrCorrupt is the error of bytes that are not an entry of this format.
var ErrCorrupt = errors.New("not a cache entry of a known format")

// Header is the decoded header of an entry.
type Header struct {
	Kind       byte
	FreshUntil time.Time
}

// Append appends the header of an entry of kind, fresh until freshUntil, to
// dst and returns the extended slice; the payload follows it.
func Append(dst []byte, kind byte, freshUntil time.Time) []byte {
	dst = append(dst, format, kind)
	return binary.BigEndian.AppendUint64(dst, uint64(freshUntil.UnixMilli()))
}

// Parse splits b into its header and payload. It fails with ErrCorrupt on
// bytes of another format, an unknown kind, or a negative entry that
// carries a payload.
func Parse(b []byte) (Header, []byte, error) {
	if len(b) < HeaderLen || b[0] != format {
		return Header{}, nil, ErrCorrupt
	}
	h := Header{Kind: b[1], FreshUntil: time.UnixMilli(int64(binary.BigEndian.Uint64(b[2:HeaderLen])))}
	payload := b[HeaderLen:]
	switch {
	case h.Kind == KindValue:
	case h.Kind == KindNotFound && len(payload) == 0:
	default:
		return Header{}, nil, fmt.Errorf("%w: kind %d with %d bytes of payload", ErrCorrupt, h.Kind, len(payload))
	}
	return h, payload, nil
}
