package authn_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

func TestClaimMapping(t *testing.T) {
	iss := startIssuer(t)
	keycloakToken := map[string]any{
		"azp":          "web",
		"scope":        "openid captures.read",
		"realm_access": map[string]any{"roles": []string{"planter", "offline_access"}},
		"resource_access": map[string]any{
			authntest.Audience: map[string]any{"roles": []string{"reader"}},
			"account":          map[string]any{"roles": []string{"manage-account"}},
		},
		"groups": []string{"/acme/field"},
	}
	tests := []struct {
		name   string
		claims authn.ClaimsConfig
		token  map[string]any
		want   authn.Identity
	}{
		{
			name:   "keycloak, clients default to the audiences",
			claims: authn.ClaimsConfig{Preset: "keycloak"},
			token:  keycloakToken,
			want:   authn.Identity{ClientID: "web", Scopes: []string{"openid", "captures.read"}, Roles: []string{"planter", "offline_access", "reader"}, Groups: []string{"/acme/field"}},
		},
		{
			name:   "keycloak with named clients",
			claims: authn.ClaimsConfig{Preset: "keycloak", Clients: []string{"account"}},
			token:  keycloakToken,
			want:   authn.Identity{ClientID: "web", Scopes: []string{"openid", "captures.read"}, Roles: []string{"planter", "offline_access", "manage-account"}, Groups: []string{"/acme/field"}},
		},
		{
			name:  "generic: roles, groups, scp array, client_id",
			token: map[string]any{"client_id": "cli", "azp": "web", "roles": []string{"admin", "admin"}, "groups": []string{"ops"}, "scp": []string{"a", "b"}},
			want:  authn.Identity{ClientID: "cli", Scopes: []string{"a", "b"}, Roles: []string{"admin"}, Groups: []string{"ops"}},
		},
		{
			name:   "generic with namespaced and nested paths",
			claims: authn.ClaimsConfig{Roles: []string{"https://acme.org/roles", "app.roles"}, Scopes: []string{"scope"}},
			token:  map[string]any{"https://acme.org/roles": []string{"x"}, "app": map[string]any{"roles": []string{"y"}}, "scope": "s1  s2"},
			want:   authn.Identity{Scopes: []string{"s1", "s2"}, Roles: []string{"x", "y"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthn(t, iss, func(c *authn.Config) { c.Issuers[0].Claims = tt.claims })
			p, err := a.Verify(context.Background(), iss.Sign(iss.Claims(tt.token)))
			if err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			ignore := cmpopts.IgnoreFields(authn.Identity{}, "Subject", "Issuer", "Audiences", "Expiry", "Method")
			if diff := cmp.Diff(tt.want, p.Identity(), ignore, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Verify() principal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrincipalClaims(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, nil)
	p, err := a.Verify(context.Background(), iss.Sign(iss.Claims(map[string]any{
		"email": "alice@example.com", "org": map[string]any{"id": 42},
	})))
	if err != nil {
		t.Fatal(err)
	}
	want := authn.Identity{Subject: "alice", Issuer: iss.URL, Audiences: []string{authntest.Audience}, Method: authn.AuthToken}
	if diff := cmp.Diff(want, p.Identity(), cmpopts.IgnoreFields(authn.Identity{}, "Expiry"), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Verify() principal (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		name string
		want any
		ok   bool
	}{{"email", "alice@example.com", true}, {"org.id", 42.0, true}, {"missing", nil, false}} {
		if got, ok := p.Claim(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("Claim(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	var typed struct {
		Email string `json:"email"`
		Org   struct {
			ID int `json:"id"`
		} `json:"org"`
	}
	if err := p.Claims(&typed); err != nil || typed.Email != "alice@example.com" || typed.Org.ID != 42 {
		t.Errorf("Claims() = %v, got %+v", err, typed)
	}
	if err := (authn.NewPrincipal(authn.Identity{Method: authn.AuthMTLS})).Claims(&typed); err == nil {
		t.Error("Claims() on an mTLS principal = nil, want an error")
	}
}

func TestContext(t *testing.T) {
	if p, ok := authn.FromContext(context.Background()); ok || p != nil {
		t.Errorf("FromContext(empty) = %v, %v; want nil, false", p, ok)
	}
	want := authn.NewPrincipal(authn.Identity{Subject: "alice"})
	if p, ok := authn.FromContext(authn.NewContext(context.Background(), want)); !ok || p != want {
		t.Errorf("FromContext(NewContext(p)) = %v, %v; want p, true", p, ok)
	}
	if p, ok := authn.FromContext(authn.NewContext(context.Background(), nil)); ok {
		t.Errorf("FromContext(NewContext(nil)) = %v, true; want false", p)
	}
}
