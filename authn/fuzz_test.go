package authn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

// FuzzVerify feeds arbitrary strings to the token path. Verify must never
// panic, must fail with an *authn.Error, and may accept only what the test
// issuer signed: a subject and an expiry in the future. The seed corpus is
// in testdata/fuzz/FuzzVerify; run with go test -fuzz FuzzVerify ./authn.
func FuzzVerify(f *testing.F) {
	iss := authntest.Start()
	f.Cleanup(iss.Close)
	a := newAuthn(f, iss, nil)
	valid := iss.Sign(iss.Claims(map[string]any{"roles": []string{"admin"}, "scope": "a b"}))
	for _, seed := range []string{
		valid,
		valid + ".",
		authntest.Raw(map[string]any{"alg": "none"}, iss.Claims(nil), nil),
		authntest.Raw(map[string]any{"alg": "RS256", "kid": "rsa-1", "crit": []string{"b64"}, "b64": false}, iss.Claims(nil), []byte("sig")),
		`{"payload":"e30","signatures":[{"protected":"eyJhbGciOiJSUzI1NiJ9","signature":"AA"}]}`,
		"....",
		"Bearer x.y.z",
	} {
		f.Add(seed)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := a.Verify(ctx, tok)
		if err != nil {
			var e *authn.Error
			if !errors.As(err, &e) || e.Reason == "" {
				t.Fatalf("Verify(%q) = %v, want an *authn.Error", tok, err)
			}
			return
		}
		if p.Subject() == "" || p.Issuer() != iss.URL || !p.Expiry().After(time.Now().Add(-time.Minute)) {
			t.Fatalf("Verify(%q) accepted %+v", tok, p)
		}
	})
}
