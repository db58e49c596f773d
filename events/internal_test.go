package events

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHeaderValue(t *testing.T) {
	tests := map[string]string{
		"plain-ascii_1.0":          "plain-ascii_1.0",
		"Euro € 😀":                 "Euro%20%E2%82%AC%20%F0%9F%98%80", // the example of the NATS binding
		`say "hi"`:                 "say%20%22hi%22",
		"100%":                     "100%25",
		"tab\tand\nnewline\x7f":    "tab%09and%0Anewline%7F",
		"":                         "",
		"/services/orders?x=1&y=2": "/services/orders?x=1&y=2",
	}
	for in, want := range tests {
		if got := headerValue(in); got != want {
			t.Errorf("headerValue(%q) = %q, want %q", in, got, want)
		}
		back, err := unescapeHeaderValue(headerValue(in))
		if err != nil || back != in {
			t.Errorf("unescapeHeaderValue(headerValue(%q)) = %q, %v; want the original", in, back, err)
		}
	}
}

func TestUnescapeHeaderValue(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: `"quoted \"value\""`, want: `quoted "value"`},
		{in: "%e2%82%ac", want: "€"},
		{in: "unneeded%41", want: "unneededA"},
		{in: "%C0%A0", wantErr: true}, // overlong UTF-8, which the binding requires rejecting
		{in: "%4", wantErr: true},
		{in: "%ZZ", wantErr: true},
	}
	for _, tt := range tests {
		got, err := unescapeHeaderValue(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("unescapeHeaderValue(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAttributesRoundTrip(t *testing.T) {
	a := attributes{
		id: "id-1", source: "//orders", typ: "org.example.v1.thing", subject: "naïve",
		dataSchema: "type.googleapis.com/x.Y", contentType: ContentTypeJSON, key: "k 1",
		time:       time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.FixedZone("x", 3600)),
		extensions: map[string]string{"tenant": "acme corp"},
	}
	h := map[string]string{}
	a.encode(h)
	got, err := decodeAttributes(h)
	if err != nil {
		t.Fatalf("decodeAttributes: %v", err)
	}
	if !got.time.Equal(a.time) {
		t.Errorf("time = %v, want %v", got.time, a.time)
	}
	got.time, a.time = time.Time{}, time.Time{}
	if diff := cmp.Diff(a, got, cmp.AllowUnexported(attributes{})); diff != "" {
		t.Errorf("attributes mismatch (-want +got):\n%s", diff)
	}
}

func TestDecodeAttributesErrors(t *testing.T) {
	good := map[string]string{HeaderSpecVersion: "1.0", HeaderID: "1", HeaderSource: "/s", HeaderType: "t.v1"}
	with := func(k, v string) map[string]string {
		h := maps.Clone(good)
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	tests := map[string]map[string]string{
		"no specversion":  with(HeaderSpecVersion, ""),
		"old specversion": with(HeaderSpecVersion, "0.3"),
		"no id":           with(HeaderID, ""),
		"no source":       with(HeaderSource, ""),
		"no type":         with(HeaderType, ""),
		"bad time":        with(HeaderTime, "yesterday"),
		"bad encoding":    with(HeaderSubject, "%ZZ"),
		"xml data":        with(HeaderContentType, "application/xml"),
		"bad media type":  with(HeaderContentType, "a/b; =x"),
	}
	for name, h := range tests {
		if _, err := decodeAttributes(h); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decodeAttributes = %v, want ErrMalformed", name, err)
		}
	}
	a, err := decodeAttributes(with(HeaderContentType, "application/json; charset=utf-8"))
	if err != nil || a.contentType != ContentTypeJSON {
		t.Errorf("JSON with a charset: content type %q, %v; want %q", a.contentType, err, ContentTypeJSON)
	}
	if a, err := decodeAttributes(good); err != nil || a.contentType != ContentTypeProtobuf {
		t.Errorf("no content-type: %q, %v; want protobuf", a.contentType, err)
	}
}

func TestBackoff(t *testing.T) {
	p := policy{initialBackoff: 100 * time.Millisecond, maxBackoff: time.Second}
	for attempt, ceiling := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 40: time.Second, 1000: time.Second,
	} {
		for range 50 {
			if d := backoff(p, attempt); d < ceiling/2 || d > ceiling {
				t.Fatalf("backoff(attempt %d) = %v, want within [%v, %v]", attempt, d, ceiling/2, ceiling)
			}
		}
	}
	if d := backoff(policy{}, 3); d != 0 {
		t.Errorf("backoff with no delay = %v, want 0", d)
	}
}

func TestMemoryDeduper(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(0, 0)
	d := NewMemoryDeduper(3).(*memoryDeduper)
	d.now = func() time.Time { return now }
	claim := func(key string, ttl time.Duration) DedupState {
		t.Helper()
		s, err := d.Claim(ctx, key, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := claim("a", time.Minute); s != DedupClaimed {
		t.Errorf("first Claim = %v, want DedupClaimed", s)
	}
	if s := claim("a", time.Minute); s != DedupInProgress {
		t.Errorf("second Claim = %v, want DedupInProgress", s)
	}
	d.Release(ctx, "a")
	if s := claim("a", time.Minute); s != DedupClaimed {
		t.Errorf("Claim after Release = %v, want DedupClaimed", s)
	}
	d.Done(ctx, "a", time.Hour)
	d.Release(ctx, "a") // does not forget a processed ID
	if s := claim("a", time.Minute); s != DedupDone {
		t.Errorf("Claim after Done = %v, want DedupDone", s)
	}
	// A claim expires: its holder died.
	claim("b", time.Second)
	now = now.Add(2 * time.Second)
	if s := claim("b", time.Second); s != DedupClaimed {
		t.Errorf("Claim after the claim expired = %v, want DedupClaimed", s)
	}
	// The window expires.
	now = now.Add(2 * time.Hour)
	if s := claim("a", time.Minute); s != DedupClaimed {
		t.Errorf("Claim after the window = %v, want DedupClaimed", s)
	}
	// Full: the oldest goes first.
	for _, k := range []string{"c", "d", "e"} {
		claim(k, time.Hour)
		d.Done(ctx, k, time.Hour)
	}
	if len(d.index) != 3 {
		t.Errorf("deduper holds %d keys, want its size 3", len(d.index))
	}
	if s := claim("a", time.Minute); s != DedupClaimed { // the oldest, evicted
		t.Errorf("Claim of an evicted key = %v, want DedupClaimed", s)
	}
	if s := claim("e", time.Minute); s != DedupDone {
		t.Errorf("Claim of a recent key = %v, want DedupDone", s)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad input")
	err := Permanent(base)
	if !IsPermanent(err) || !errors.Is(err, base) {
		t.Errorf("Permanent(%v): IsPermanent %v, errors.Is %v; want both", base, IsPermanent(err), errors.Is(err, base))
	}
	if wrapped := errors.Join(errors.New("x"), err); !IsPermanent(wrapped) {
		t.Errorf("IsPermanent of a wrapped Permanent = false")
	}
	if IsPermanent(base) || Permanent(nil) != nil {
		t.Errorf("IsPermanent(plain) = %v, Permanent(nil) = %v; want false, nil", IsPermanent(base), Permanent(nil))
	}
}
