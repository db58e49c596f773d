package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

// jwksServer publishes the JWKS document doc at /jwks, for keys the test
// issuer would not publish (weak, or restricted by key_ops).
func jwksServer(t *testing.T, doc any) string {
	t.Helper()
	body, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/jwks"
}

// publicJWK returns the public JWK of k as a JSON object, with extra
// members added.
func publicJWK(t *testing.T, k *authntest.Key, extra map[string]any) map[string]any {
	t.Helper()
	b, err := jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.ID, Algorithm: k.Alg, Use: "sig"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for name, v := range extra {
		m[name] = v
	}
	return m
}

func TestJWKSSkipsKeysNotForVerifying(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakKey := &authntest.Key{ID: "weak", Alg: "RS256", Private: weak}
	encKey := authntest.NewKey("enc-only", "ES256")
	goodKey := authntest.NewKey("good", "ES256")
	url := jwksServer(t, map[string]any{"keys": []any{
		publicJWK(t, weakKey, nil),
		publicJWK(t, encKey, map[string]any{"key_ops": []string{"encrypt"}}),
		publicJWK(t, goodKey, map[string]any{"key_ops": []string{"verify"}}),
	}})
	iss := startIssuer(t)
	logs := &logs{}
	a := newAuthn(t, iss, func(c *authn.Config) { c.Issuers[0].JWKSURL = url; c.Algorithms = []string{"RS256", "ES256"} },
		authn.WithLogger(slog.New(logs)))
	for _, tt := range []struct {
		key  *authntest.Key
		want error
	}{
		{weakKey, authn.ErrUnknownKey},
		{encKey, authn.ErrUnknownKey},
		{goodKey, nil},
	} {
		_, err := a.Verify(context.Background(), authntest.SignWith(tt.key, nil, iss.Claims(nil)))
		if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("Verify(token signed by %s) = %v, want %v", tt.key.ID, err, tt.want)
		}
	}
	got := strings.Join(logs.take(), "\n")
	for _, want := range []string{"1024 bits", `key_ops ["encrypt"]`} {
		if !strings.Contains(got, want) {
			t.Errorf("log = %q, want a line saying %q", got, want)
		}
	}
}

func TestTokenMustBeCanonical(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, nil)
	good := iss.Sign(iss.Claims(nil))
	head, rest, _ := strings.Cut(good, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	// A segment whose length leaves unused bits can carry them set: the
	// same bytes, spelled another way.
	withBits := func(seg string) string {
		if len(seg)%4 == 0 {
			t.Fatalf("segment %q has no unused bits", seg)
		}
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		last := strings.IndexByte(alphabet, seg[len(seg)-1])
		return seg[:len(seg)-1] + string(alphabet[last|1])
	}
	var trailing string
	switch {
	case len(payload)%4 != 0:
		trailing = head + "." + withBits(payload) + "." + sig
	case len(head)%4 != 0:
		trailing = withBits(head) + "." + payload + "." + sig
	default:
		trailing = head + "." + payload + "." + withBits(sig)
	}
	for name, tok := range map[string]string{
		"CR LF inside the payload": head + "." + payload[:10] + "\r\n" + payload[10:] + "." + sig,
		"space inside the header":  head[:5] + " " + head[5:] + "." + payload + "." + sig,
		"unused bits set":          trailing,
		"padding":                  head + "." + payload + "." + sig + "==",
	} {
		if _, err := a.Verify(context.Background(), tok); !errors.Is(err, authn.ErrMalformed) {
			t.Errorf("Verify(%s) = %v, want ErrMalformed", name, err)
		}
	}
	verifyOK(t, a, good)
}

// TestECDSAHighS pins a decision: an ES256 signature with a high S verifies.
// Go's crypto/ecdsa, OpenSSL and Java sign with either S, so an issuer's
// own tokens carry a high S about half the time; refusing them would refuse
// real tokens. The second spelling gains an attacker nothing: it needs the
// issuer's signature, and canonical encoding leaves no third.
func TestECDSAHighS(t *testing.T) {
	k := authntest.NewKey("ec-1", "ES256")
	iss := startIssuer(t, k)
	a := newAuthn(t, iss, nil)
	tok := iss.Sign(iss.Claims(nil))
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || len(sig) != 64 {
		t.Fatalf("ES256 signature of %d bytes, %v", len(sig), err)
	}
	n := elliptic.P256().Params().N
	s := new(big.Int).SetBytes(sig[32:])
	flipped := make([]byte, 64)
	copy(flipped, sig[:32])
	new(big.Int).Sub(n, s).FillBytes(flipped[32:])
	other := tok[:i+1] + base64.RawURLEncoding.EncodeToString(flipped)
	verifyOK(t, a, tok)
	verifyOK(t, a, other)
	if _, ok := k.Private.(*ecdsa.PrivateKey); !ok {
		t.Fatal("the test key is not ECDSA")
	}
}

func TestNullRolesAreAbsent(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, nil)
	raw := iss.Sign(iss.Claims(map[string]any{"roles": json.RawMessage("null"), "groups": json.RawMessage("null")}))
	p, err := a.Verify(context.Background(), raw)
	if err != nil {
		t.Fatalf("Verify(roles: null) = %v, want the principal with no roles", err)
	}
	if p.Roles().Len() != 0 || p.Groups().Len() != 0 {
		t.Errorf("roles, groups = %v, %v; want none", p.Roles(), p.Groups())
	}
}

func TestMaxTokenLifetime(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, func(c *authn.Config) { c.MaxTokenLifetime = 2 * time.Hour })
	now := time.Now()
	for _, tt := range []struct {
		name   string
		claims map[string]any
		want   error
	}{
		{"an hour", nil, nil},
		{"a year", map[string]any{"exp": now.AddDate(1, 0, 0).Unix()}, authn.ErrLifetime},
		{"a year without iat", map[string]any{"iat": nil, "exp": now.AddDate(1, 0, 0).Unix()}, authn.ErrLifetime},
		{"three hours issued two hours ago", map[string]any{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(time.Hour).Unix()}, authn.ErrLifetime},
	} {
		_, err := a.Verify(context.Background(), iss.Sign(iss.Claims(tt.claims)))
		if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("Verify(%s) = %v, want %v", tt.name, err, tt.want)
		}
	}
	// The default bounds a token with no stated lifetime too.
	d := newAuthn(t, iss, nil)
	if _, err := d.Verify(context.Background(), iss.Sign(iss.Claims(map[string]any{"exp": now.AddDate(10, 0, 0).Unix()}))); !errors.Is(err, authn.ErrLifetime) {
		t.Errorf("Verify(ten years) with the default = %v, want ErrLifetime", err)
	}
}

// TestCachedTokenOfRemovedKey: a token verified and cached stops working
// once the issuer no longer publishes its key, long before its own exp.
func TestCachedTokenOfRemovedKey(t *testing.T) {
	k1, k2 := authntest.NewKey("rsa-1", "RS256"), authntest.NewKey("rsa-2", "RS256")
	iss := startIssuer(t, k1)
	clk := newClock()
	a := newAuthn(t, iss, func(c *authn.Config) { c.JWKSMaxAge = 10 * time.Minute }, authn.WithClock(clk.Now))
	tok := authntest.SignWith(k1, nil, iss.Claims(map[string]any{"exp": time.Now().Add(20 * time.Hour).Unix()}))
	verifyOK(t, a, tok)

	iss.SetKeys(k2) // k1 is compromised and withdrawn
	clk.Advance(11 * time.Minute)
	// The first call past jwks_max_age refetches in the background.
	if _, err := a.Verify(context.Background(), authntest.SignWith(k2, nil, iss.Claims(nil))); err != nil && !errors.Is(err, authn.ErrUnknownKey) {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := a.Verify(context.Background(), tok)
		if errors.Is(err, authn.ErrUnknownKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Verify(token of the withdrawn key) = %v, want ErrUnknownKey once the key set is refetched", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCacheMaxAge: a cached token is verified again after cache_max_age,
// which shows as a new Principal.
func TestCacheMaxAge(t *testing.T) {
	iss := startIssuer(t)
	clk := newClock()
	a := newAuthn(t, iss, func(c *authn.Config) { c.CacheMaxAge = time.Minute }, authn.WithClock(clk.Now))
	tok := iss.Sign(iss.Claims(nil))
	p1, err := a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := a.Verify(context.Background(), tok); p2 != p1 {
		t.Fatal("second Verify did not hit the cache")
	}
	clk.Advance(61 * time.Second)
	if p3, err := a.Verify(context.Background(), tok); err != nil || p3 == p1 {
		t.Errorf("Verify after cache_max_age = %p, %v; want a fresh verification", p3, err)
	}
}

func TestPrincipalIsReadOnly(t *testing.T) {
	roles := []string{"planter"}
	p := authn.NewPrincipal(authn.Identity{Subject: "alice", Roles: roles})
	roles[0] = "admin"
	id := p.Identity()
	id.Roles[0] = "admin"
	if got := p.Roles().At(0); got != "planter" {
		t.Errorf("Roles().At(0) = %q after changing the input and a copy, want planter", got)
	}
	if c := p.Roles().Clone(); c[0] != "planter" {
		t.Errorf("Roles().Clone() = %v", c)
	} else {
		c[0] = "admin"
	}
	if !p.Roles().Contains("planter") || p.Roles().Contains("admin") {
		t.Errorf("Roles() = %v, want [planter]", p.Roles())
	}
}

// hungJWKS accepts connections and never answers, as an overloaded identity
// provider does.
func hungJWKS(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.URL + "/jwks"
}

// TestIssuerHangs: the key fetch gives up on its own, and the caller, whose
// deadline has not passed, learns that authentication is unavailable; the
// failure is logged and counted, and no URL reaches the client.
func TestIssuerHangs(t *testing.T) {
	url := hungJWKS(t)
	iss := startIssuer(t)
	logs := &logs{}
	reader := sdkmetric.NewManualReader()
	a := newAuthn(t, iss, func(c *authn.Config) { c.Issuers[0].JWKSURL = url },
		authn.WithHTTPClient(&http.Client{Timeout: 200 * time.Millisecond}),
		authn.WithLogger(slog.New(logs)),
		authn.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		authn.WithPublicMethods())
	conn := serve(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+iss.Sign(iss.Claims(nil)))
	start := time.Now()
	_, err := call(ctx, conn, "Private")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("call with a hung issuer = %v, want Unavailable", err)
	}
	if msg := status.Convert(err).Message(); strings.Contains(msg, "http") || strings.Contains(msg, "127.0.0.1") {
		t.Errorf("message %q names the issuer's endpoint", msg)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("call took %v, want the fetch's own timeout", took)
	}
	if got := strings.Join(logs.take(), "\n"); !strings.Contains(got, "unavailable") {
		t.Errorf("log = %q, want the unavailable reason", got)
	}
	if n := failures(t, reader)["unavailable"]; n != 1 {
		t.Errorf("loam.authn.failures{reason=unavailable} = %d, want 1", n)
	}
}

// TestCallerDeadlineWhileFetching: when the caller's own deadline ends
// first, the call ends with DeadlineExceeded and a generic message.
func TestCallerDeadlineWhileFetching(t *testing.T) {
	url := hungJWKS(t)
	iss := startIssuer(t)
	a := newAuthn(t, iss, func(c *authn.Config) { c.Issuers[0].JWKSURL = url })
	conn := serve(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+iss.Sign(iss.Claims(nil)))
	_, err := call(ctx, conn, "Private")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("call = %v, want DeadlineExceeded", err)
	}
	if msg := status.Convert(err).Message(); strings.Contains(msg, "jwks") || strings.Contains(msg, "127.0.0.1") {
		t.Errorf("message %q names the issuer's endpoint", msg)
	}
}

// TestIssuerDownIsUnavailable: keys that cannot be fetched are the
// server's failure, which clients may retry, not the caller's; readiness
// reports it as degraded or, when configured, not ready.
func TestIssuerDownIsUnavailable(t *testing.T) {
	iss := startIssuer(t)
	iss.SetDown(true)
	for _, outage := range []string{"", authn.OutageNotReady} {
		a := newAuthn(t, iss, func(c *authn.Config) { c.IssuerOutage = outage })
		if err := a.Check(context.Background()); err != nil {
			t.Errorf("Check() before any fetch = %v, want nil", err)
		}
		conn := serve(t, a)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+iss.Sign(iss.Claims(nil)))
		if _, err := call(ctx, conn, "Private"); status.Code(err) != codes.Unavailable {
			t.Errorf("call with the issuer down = %v, want Unavailable", err)
		}
		err := a.Check(context.Background())
		var d interface{ Degraded() bool }
		isDegraded := errors.As(err, &d) && d.Degraded()
		switch {
		case err == nil:
			t.Errorf("Check() with the issuer down = nil, want an error")
		case outage == authn.OutageNotReady && isDegraded:
			t.Errorf("Check() with issuer_outage not_ready = %v, degraded; want not ready", err)
		case outage == "" && !isDegraded:
			t.Errorf("Check() by default = %v, want degraded", err)
		}
	}
}

// failures returns the loam.authn.failures counter by reason.
func failures(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "loam.authn.failures" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				reason, _ := dp.Attributes.Value("reason")
				got[reason.AsString()] += dp.Value
			}
		}
	}
	return got
}
