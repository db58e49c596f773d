package authn_test

import (
	"context"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

// BenchmarkVerify compares, on the same RS256 Keycloak-like token, a
// cached verification, an uncached one, and go-oidc's IDTokenVerifier with
// its remote key set (the baseline).
func BenchmarkVerify(b *testing.B) {
	iss := authntest.Start()
	defer iss.Close()
	tok := iss.Sign(iss.Claims(map[string]any{
		"azp":             "web",
		"scope":           "openid profile captures.read",
		"realm_access":    map[string]any{"roles": []string{"offline_access", "planter"}},
		"resource_access": map[string]any{authntest.Audience: map[string]any{"roles": []string{"reader"}}},
		"email":           "alice@example.com",
	}))
	ctx := context.Background()
	keycloak := func(c *authn.Config) { c.Issuers[0].Claims.Preset = "keycloak" }

	run := func(b *testing.B, verify func() error) {
		if err := verify(); err != nil { // warm: keys fetched, cache filled
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := verify(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("cached", func(b *testing.B) {
		a := newAuthn(b, iss, keycloak)
		run(b, func() error { _, err := a.Verify(ctx, tok); return err })
	})
	b.Run("uncached", func(b *testing.B) {
		a := newAuthn(b, iss, func(c *authn.Config) { keycloak(c); c.CacheSize = -1 })
		run(b, func() error { _, err := a.Verify(ctx, tok); return err })
	})
	b.Run("go-oidc", func(b *testing.B) {
		p, err := oidc.NewProvider(ctx, iss.URL)
		if err != nil {
			b.Fatal(err)
		}
		v := p.Verifier(&oidc.Config{ClientID: authntest.Audience})
		run(b, func() error { _, err := v.Verify(ctx, tok); return err })
	})
}
