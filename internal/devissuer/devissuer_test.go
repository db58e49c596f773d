package devissuer

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// verify checks tok against the issuer's published JWKS and returns its
// claims and typ header.
func verify(t *testing.T, i *Issuer, tok string) (map[string]any, string) {
	t.Helper()
	var jwks jose.JSONWebKeySet
	getJSON(t, i.URL+"/keys", &jwks)
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	keys := jwks.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys for kid %q", len(keys), jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("signature does not verify with the published key: %v", err)
	}
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	typ, _ := jws.Signatures[0].Protected.ExtraHeaders["typ"].(string)
	return claims, typ
}

func TestIssuer(t *testing.T) {
	i, err := Start("trees-api", Client{ID: "worker", Secret: "pw", Roles: []string{"admin"}, Scopes: []string{"trees.read"}})
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()

	var disc map[string]any
	getJSON(t, i.URL+"/.well-known/openid-configuration", &disc)
	if disc["issuer"] != i.URL || disc["jwks_uri"] != i.URL+"/keys" || disc["token_endpoint"] != i.URL+"/token" {
		t.Errorf("discovery = %v, want issuer, jwks_uri and token_endpoint under %s", disc, i.URL)
	}

	t.Run("mint", func(t *testing.T) {
		tok, err := i.Mint("alice", []string{"planter"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		claims, typ := verify(t, i, tok)
		if typ != "at+jwt" || claims["sub"] != "alice" || claims["aud"] != "trees-api" || claims["iss"] != i.URL {
			t.Errorf("minted token typ %q claims %v, want at+jwt for alice, aud trees-api", typ, claims)
		}
		if exp := int64(claims["exp"].(float64)); exp < time.Now().Unix() || exp > time.Now().Add(2*time.Minute).Unix() {
			t.Errorf("exp = %d, want about a minute from now", exp)
		}
	})

	grant := func(form url.Values, user, pass string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", i.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	tests := []struct {
		name       string
		form       url.Values
		user, pass string
		wantCode   int
		wantError  string
	}{
		{name: "basic auth", form: cc, user: "worker", pass: "pw", wantCode: 200},
		{name: "form auth", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {"worker"}, "client_secret": {"pw"}}, wantCode: 200},
		{name: "wrong secret", form: cc, user: "worker", pass: "nope", wantCode: 401, wantError: "invalid_client"},
		{name: "unknown client", form: cc, user: "ghost", pass: "pw", wantCode: 401, wantError: "invalid_client"},
		{name: "other grant", form: url.Values{"grant_type": {"password"}}, user: "worker", pass: "pw", wantCode: 400, wantError: "unsupported_grant_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := grant(tt.form, tt.user, tt.pass)
			if code != tt.wantCode || (tt.wantError != "" && body["error"] != tt.wantError) {
				t.Fatalf("token endpoint = %d %v, want %d %s", code, body, tt.wantCode, tt.wantError)
			}
			if tt.wantCode != 200 {
				return
			}
			claims, _ := verify(t, i, body["access_token"].(string))
			if claims["client_id"] != "worker" || claims["scope"] != "trees.read" || claims["sub"] != "service-account-worker" {
				t.Errorf("client credentials token claims = %v", claims)
			}
		})
	}
}

func TestMintToken(t *testing.T) {
	i, err := Start("trees")
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	hourAgo := time.Now().Add(-2 * time.Hour)
	tok, err := i.MintToken(Token{Subject: "ann", Scopes: []string{"a", "b"}, IssuedAt: hourAgo, TTL: time.Hour, Audience: "other"})
	if err != nil {
		t.Fatal(err)
	}
	claims, _ := verify(t, i, tok)
	if claims["aud"] != "other" || claims["scope"] != "a b" || claims["exp"].(float64) > float64(time.Now().Unix()) {
		t.Errorf("claims = %v, want aud other, scope \"a b\", expired", claims)
	}
	if _, ok := claims["roles"]; ok {
		t.Errorf("claims = %v, want no roles claim for nil Roles", claims)
	}
}

func TestStartOnRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:9400", "nonsense"} {
		if i, err := StartOn(addr, "trees"); err == nil {
			i.Close()
			t.Errorf("StartOn(%q) = nil error, want a refusal", addr)
		}
	}
}
