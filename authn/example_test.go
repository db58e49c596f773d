package authn_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
	"github.com/loamhq/loam/config"
)

// A local OIDC issuer stands in for Keycloak; in production the Config
// comes from the "authn" section of the service's configuration.
func Example() {
	idp := authntest.Start()
	defer idp.Close()

	a, err := authn.New(authn.Config{
		Issuers: []authn.IssuerConfig{{
			URL:       idp.URL,
			Audiences: []string{"captures-api"},
			Claims:    authn.ClaimsConfig{Preset: "keycloak"},
		}},
		Leeway: 30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	tok := idp.Sign(idp.Claims(map[string]any{
		"scope":        "openid captures.read",
		"realm_access": map[string]any{"roles": []string{"planter"}},
	}))
	p, err := a.Verify(context.Background(), tok)
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Subject(), p.Method(), p.Roles(), p.Scopes())
	// Output: alice token [planter] [openid captures.read]
}

// The interceptors are methods of the Authenticator, built once.
func ExampleAuthenticator_UnaryInterceptor() {
	idp := authntest.Start()
	defer idp.Close()
	a, err := authn.New(authn.Config{Issuers: []authn.IssuerConfig{{URL: idp.URL, Audiences: []string{"captures-api"}}}},
		authn.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	_ = grpc.NewServer(grpc.ChainUnaryInterceptor(a.UnaryInterceptor), grpc.ChainStreamInterceptor(a.StreamInterceptor))

	// What a handler sees, with and without a valid token:
	info := &grpc.UnaryServerInfo{FullMethod: "/captures.v1.CaptureService/CreateCapture"}
	handler := func(ctx context.Context, _ any) (any, error) {
		p, _ := authn.FromContext(ctx)
		return "hello " + p.Subject(), nil
	}
	for _, auth := range []string{"Bearer " + idp.Sign(idp.Claims(nil)), "Bearer forged"} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", auth))
		fmt.Println(a.UnaryInterceptor(ctx, nil, info, handler))
	}
	// Output:
	// hello alice <nil>
	// <nil> rpc error: code = Unauthenticated desc = authentication required
}

func ExampleAuthenticator_Verify_errors() {
	idp := authntest.Start()
	defer idp.Close()
	a, err := authn.New(authn.Config{Issuers: []authn.IssuerConfig{{URL: idp.URL, Audiences: []string{"captures-api"}}}})
	if err != nil {
		panic(err)
	}
	_, err = a.Verify(context.Background(), idp.Sign(idp.Claims(map[string]any{"aud": "billing-api"})))
	fmt.Println(errors.Is(err, authn.ErrAudience))
	var e *authn.Error
	if errors.As(err, &e) {
		fmt.Println(e.Reason)
	}
	// Output:
	// true
	// audience
}

func ExampleConfig_Validate() {
	cfg := authn.Config{
		Issuers:    []authn.IssuerConfig{{URL: "http://sso.example.com/realms/acme"}},
		Algorithms: []string{"HS256"},
	}
	for line := range strings.SplitSeq(cfg.Validate().Error(), "\n") {
		fmt.Println(line)
	}
	// Output:
	// authn: invalid configuration: issuers[0].url: "http://sso.example.com/realms/acme" must use https (http only on a loopback host)
	// authn: invalid configuration: issuers[0].audiences: at least one non-empty audience is required
	// authn: invalid configuration: algorithms[0]: "HS256" is not one of [RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA] (none and HMAC are never accepted)
}

func ExampleNewContext() {
	ctx := authn.NewContext(context.Background(), authn.NewPrincipal(authn.Identity{Subject: "alice", Method: authn.AuthToken}))
	if p, ok := authn.FromContext(ctx); ok {
		fmt.Println(p.Subject(), p.Method())
	}
	// Output: alice token
}

// A client of another service authenticates as the service itself.
func ExampleNewClientCredentials() {
	idp := authntest.Start()
	defer idp.Close()
	creds, err := authn.NewClientCredentials(authn.ClientCredentialsConfig{
		TokenURL:     idp.URL + "/token",
		ClientID:     "captures-worker",
		ClientSecret: config.NewSecret("s3cret"),
	}, authn.WithoutTransportSecurity()) // loopback only
	if err != nil {
		panic(err)
	}
	// In a service: grpc.NewClient(target, grpc.WithPerRPCCredentials(creds), ...).
	md, err := creds.GetRequestMetadata(context.Background())
	fmt.Println(strings.HasPrefix(md["authorization"], "Bearer "), err)
	// Output: true <nil>
}
