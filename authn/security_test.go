package authn_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

// TestSecurity is the table of attacks and edge cases of the acceptance
// list. Each case checks the error Verify returns and, through the unary
// interceptor, the status on the wire and the reason in the log.
func TestSecurity(t *testing.T) {
	rsa1 := authntest.NewKey("rsa-1", "RS256")
	rsa2 := authntest.NewKey("rsa-2", "RS256")
	ec := authntest.NewKey("ec-1", "ES256")
	ed := authntest.NewKey("ed-1", "EdDSA")
	attacker := authntest.NewKey("attacker", "RS256")
	iss := startIssuer(t, rsa1, rsa2, ec, ed)

	var trapHits atomic.Int64
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { trapHits.Add(1) }))
	t.Cleanup(trap.Close)

	log := &logs{}
	a := newAuthn(t, iss, func(c *authn.Config) {
		c.Issuers[0].AuthorizedParties = []string{"web", "cli"}
		c.Algorithms = []string{"RS256", "ES256", "EdDSA"}
	}, authn.WithLogger(slog.New(log)))

	now := time.Now()
	claims := func(over map[string]any) map[string]any {
		c := iss.Claims(map[string]any{"azp": "web"})
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	sign := func(k *authntest.Key, header, over map[string]any) string {
		return authntest.SignWith(k, header, claims(over))
	}
	valid := sign(rsa1, nil, nil)
	parts := strings.Split(valid, ".")

	pubDER, err := x509.MarshalPKIXPublicKey(rsa1.Private.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func(secret []byte) string {
		unsigned := authntest.Raw(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(nil), nil)
		unsigned = strings.TrimSuffix(unsigned, ".")
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(unsigned))
		return authntest.Raw(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(nil), mac.Sum(nil))
	}

	attackerJWK := jose.JSONWebKey{Key: attacker.Private.Public(), KeyID: "rsa-1", Algorithm: "RS256"}
	twoSigs := func() string {
		s, err := jose.NewMultiSigner([]jose.SigningKey{
			{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: rsa1.Private, KeyID: "rsa-1"}},
			{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: rsa2.Private, KeyID: "rsa-2"}},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign([]byte(`{"iss":"` + iss.URL + `","sub":"alice","aud":"captures-api","azp":"web","exp":` + itoa(now.Add(time.Hour).Unix()) + `}`))
		if err != nil {
			t.Fatal(err)
		}
		return jws.FullSerialize()
	}

	tests := []struct {
		name  string
		token string
		want  error // nil: accepted
	}{
		{"valid RS256", valid, nil},
		{"valid ES256", sign(ec, nil, nil), nil},
		{"valid EdDSA", sign(ed, nil, nil), nil},
		{"typ at+jwt", sign(rsa1, map[string]any{"typ": "at+jwt"}, nil), nil},
		{"typ application/at+jwt", sign(rsa1, map[string]any{"typ": "application/at+jwt"}, nil), nil},
		{"typ JWT", sign(rsa1, map[string]any{"typ": "JWT"}, nil), nil},
		{"typ of a logout token", sign(rsa1, map[string]any{"typ": "logout+jwt"}, nil), authn.ErrHeader},
		{"alg none", authntest.Raw(map[string]any{"alg": "none", "kid": "rsa-1"}, claims(nil), nil), authn.ErrAlgorithm},
		{"alg none without signature segment", strings.TrimSuffix(authntest.Raw(map[string]any{"alg": "none"}, claims(nil), nil), "."), authn.ErrMalformed},
		{"HS256 with the RSA public key PEM as secret", hs256(pubPEM), authn.ErrAlgorithm},
		{"HS256 with the RSA public key DER as secret", hs256(pubDER), authn.ErrAlgorithm},
		{"embedded jwk header", sign(attacker, map[string]any{"jwk": attackerJWK, "kid": "rsa-1"}, nil), authn.ErrHeader},
		{"jku header", sign(attacker, map[string]any{"jku": trap.URL + "/jwks"}, nil), authn.ErrHeader},
		{"x5u header", sign(attacker, map[string]any{"x5u": trap.URL + "/cert.pem"}, nil), authn.ErrHeader},
		{"kid naming another key of the issuer", sign(rsa1, map[string]any{"kid": "rsa-2"}, nil), authn.ErrSignature},
		{"attacker key under a trusted kid", sign(attacker, map[string]any{"kid": "rsa-1"}, nil), authn.ErrSignature},
		{"kid of a key of another type", sign(rsa1, map[string]any{"kid": "ec-1"}, nil), authn.ErrUnknownKey},
		{"unknown kid", sign(attacker, nil, nil), authn.ErrUnknownKey},
		{"crit header", sign(rsa1, map[string]any{"crit": []string{"exp"}, "exp": 1}, nil), authn.ErrHeader},
		{"JSON serialization with two signatures", twoSigs(), authn.ErrMalformed},
		{"two segments", parts[0] + "." + parts[1], authn.ErrMalformed},
		{"four segments", valid + "." + parts[2], authn.ErrMalformed},
		{"empty segments", "..", authn.ErrMalformed},
		{"header not base64url", "e30!." + parts[1] + "." + parts[2], authn.ErrMalformed},
		{"signature not base64url", parts[0] + "." + parts[1] + ".***", authn.ErrMalformed},
		{"payload not base64url", parts[0] + ".%%%." + parts[2], authn.ErrMalformed},
		{"tampered payload", parts[0] + "." + strings.Split(sign(rsa1, nil, map[string]any{"sub": "root"}), ".")[1] + "." + parts[2], authn.ErrSignature},
		{"payload not a JSON object", authntest.SignWith(rsa1, nil, nil), authn.ErrClaims},
		{"a million dots", strings.Repeat(".", 1<<20), authn.ErrTooLarge},
		{"expired", sign(rsa1, nil, map[string]any{"exp": now.Add(-time.Hour).Unix()}), authn.ErrExpired},
		{"expired within leeway", sign(rsa1, nil, map[string]any{"exp": now.Add(-10 * time.Second).Unix()}), nil},
		{"nbf in the future beyond leeway", sign(rsa1, nil, map[string]any{"nbf": now.Add(5 * time.Minute).Unix()}), authn.ErrNotYetValid},
		{"nbf in the future within leeway", sign(rsa1, nil, map[string]any{"nbf": now.Add(10 * time.Second).Unix()}), nil},
		{"iat in the future", sign(rsa1, nil, map[string]any{"iat": now.Add(5 * time.Minute).Unix()}), authn.ErrNotYetValid},
		{"wrong iss", sign(rsa1, nil, map[string]any{"iss": "https://evil.example.com"}), authn.ErrIssuer},
		{"issuer with a trailing slash", sign(rsa1, nil, map[string]any{"iss": iss.URL + "/"}), authn.ErrIssuer},
		{"wrong aud", sign(rsa1, nil, map[string]any{"aud": "other-api"}), authn.ErrAudience},
		{"missing aud", sign(rsa1, nil, map[string]any{"aud": nil}), authn.ErrAudience},
		{"multiple audiences, one matches", sign(rsa1, nil, map[string]any{"aud": []string{"other-api", authntest.Audience}}), nil},
		{"multiple audiences, none matches", sign(rsa1, nil, map[string]any{"aud": []string{"a", "b"}}), authn.ErrAudience},
		{"azp mismatch", sign(rsa1, nil, map[string]any{"azp": "evil"}), authn.ErrAuthorizedParty},
		{"azp missing", sign(rsa1, nil, map[string]any{"azp": nil}), authn.ErrAuthorizedParty},
		{"missing exp", sign(rsa1, nil, map[string]any{"exp": nil}), authn.ErrClaims},
		{"missing sub", sign(rsa1, nil, map[string]any{"sub": nil}), authn.ErrClaims},
		{"exp is a string", sign(rsa1, nil, map[string]any{"exp": itoa(now.Add(time.Hour).Unix())}), authn.ErrClaims},
		{"exp out of range", sign(rsa1, nil, map[string]any{"exp": 1e300}), authn.ErrClaims},
		{"iss is a number", sign(rsa1, nil, map[string]any{"iss": 42}), authn.ErrClaims},
		{"aud is an object", sign(rsa1, nil, map[string]any{"aud": map[string]any{"x": 1}}), authn.ErrClaims},
		{"aud array holds a number", sign(rsa1, nil, map[string]any{"aud": []any{authntest.Audience, 7}}), authn.ErrClaims},
		{"sub is an object", sign(rsa1, nil, map[string]any{"sub": map[string]any{"id": "alice"}}), authn.ErrClaims},
		{"roles is a number", sign(rsa1, nil, map[string]any{"roles": 3}), authn.ErrClaims},
		{"scope is a boolean", sign(rsa1, nil, map[string]any{"scope": true}), authn.ErrClaims},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Verify(ctx, tt.token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify() = %v, want success", err)
				}
			} else if !errors.Is(err, tt.want) {
				t.Fatalf("Verify() = %v, want %v", err, tt.want)
			}

			log.take()
			md := metadata.Pairs("authorization", "Bearer "+tt.token)
			_, err = a.UnaryInterceptor(metadata.NewIncomingContext(ctx, md), nil, &grpc.UnaryServerInfo{FullMethod: "/test.v1.Svc/Private"}, okHandler)
			gotLog := log.take()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("UnaryInterceptor() = %v, want success", err)
				}
				return
			}
			if s := status.Convert(err); s.Code() != codes.Unauthenticated || s.Message() != "authentication required" {
				t.Errorf("UnaryInterceptor() = %v, want Unauthenticated with the generic message", err)
			}
			if diff := cmp.Diff([]string{tt.want.(*authn.Error).Reason}, gotLog); diff != "" {
				t.Errorf("logged reasons (-want +got):\n%s", diff)
			}
		})
	}
	if n := trapHits.Load(); n != 0 {
		t.Errorf("jku/x5u trap server got %d requests, want 0", n)
	}
}

// TestRequireAccessTokenType checks the RFC 9068 typ option.
func TestRequireAccessTokenType(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, func(c *authn.Config) { c.RequireAccessTokenType = true })
	tests := []struct {
		name string
		typ  any
		want error
	}{
		{"at+jwt", "at+jwt", nil},
		{"application/at+jwt", "application/at+jwt", nil},
		{"JWT", "JWT", authn.ErrHeader},
		{"absent", nil, authn.ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := map[string]any{}
			if tt.typ != nil {
				header["typ"] = tt.typ
			}
			_, err := a.Verify(context.Background(), authntest.SignWith(iss.Key(), header, iss.Claims(nil)))
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify(typ %v) = %v, want %v", tt.typ, err, tt.want)
			}
		})
	}
}

// TestMillionDotsIsCheap: an oversized token is refused before it is
// read, so the cost does not grow with its length.
func TestMillionDotsIsCheap(t *testing.T) {
	a := newAuthn(t, startIssuer(t), nil)
	dots := strings.Repeat(".", 1<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := a.Verify(context.Background(), dots)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, authn.ErrTooLarge) {
		t.Fatalf("Verify(1M dots) = %v, want ErrTooLarge", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<10 {
		t.Errorf("Verify(1M dots) allocated %d bytes, want under 16KiB", got)
	}
}

func okHandler(ctx context.Context, _ any) (any, error) { return "ok", nil }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
