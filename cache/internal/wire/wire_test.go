package wire

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	fresh := time.UnixMilli(1_800_000_000_123)
	for _, tt := range []struct {
		name    string
		kind    byte
		payload []byte
	}{
		{"value", KindValue, []byte("hello")},
		{"empty value", KindValue, nil},
		{"not found", KindNotFound, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := append(Append(nil, tt.kind, fresh), tt.payload...)
			h, p, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(Append(...)) = %v", err)
			}
			if h.Kind != tt.kind || !h.FreshUntil.Equal(fresh) || !bytes.Equal(p, tt.payload) {
				t.Errorf("Parse = %+v, %q; want kind %d, %v, %q", h, p, tt.kind, fresh, tt.payload)
			}
		})
	}
}

func TestParseCorrupt(t *testing.T) {
	good := Append(nil, KindValue, time.Now())
	for name, b := range map[string][]byte{
		"empty":               nil,
		"short":               good[:HeaderLen-1],
		"other format":        append([]byte{2}, good[1:]...),
		"plain text":          []byte("just some bytes left by another program"),
		"unknown kind":        append([]byte{1, 7}, good[2:]...),
		"not found + payload": append(Append(nil, KindNotFound, time.Now()), 'x'),
	} {
		if _, _, err := Parse(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Parse(%s) = %v, want ErrCorrupt", name, err)
		}
	}
}
