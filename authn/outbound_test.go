package authn_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
	"github.com/loamhq/loam/config"
)

func clientConfig(iss *authntest.Issuer) authn.ClientCredentialsConfig {
	return authn.ClientCredentialsConfig{
		TokenURL:     iss.URL + "/token",
		ClientID:     authntest.ClientID,
		ClientSecret: config.NewSecret(authntest.ClientSecret),
		Scopes:       []string{"captures.read"},
	}
}

func TestClientCredentialsOneFetchUnderConcurrency(t *testing.T) {
	iss := startIssuer(t)
	creds, err := authn.NewClientCredentials(clientConfig(iss), authn.WithoutTransportSecurity())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			md, err := creds.GetRequestMetadata(context.Background())
			if err != nil || !strings.HasPrefix(md["authorization"], "Bearer ey") {
				t.Errorf("GetRequestMetadata() = %v, %v; want a bearer token", md, err)
			}
		})
	}
	wg.Wait()
	if got := iss.TokenHits.Load(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

// TestClientCredentialsRefreshBeforeExpiry: with a refresh margin longer
// than the token's life, every call fetches anew.
func TestClientCredentialsRefreshBeforeExpiry(t *testing.T) {
	iss := startIssuer(t)
	creds, err := authn.NewClientCredentials(clientConfig(iss), authn.WithoutTransportSecurity(), authn.WithRefreshBefore(2*3600e9))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := creds.GetRequestMetadata(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := iss.TokenHits.Load(); got != 3 {
		t.Errorf("token requests = %d, want 3", got)
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	iss := startIssuer(t)
	cfg := clientConfig(iss)
	cfg.ClientSecret = config.NewSecret("wrong")
	creds, err := authn.NewClientCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !creds.RequireTransportSecurity() {
		t.Error("RequireTransportSecurity() = false, want true by default")
	}
	_, err = creds.GetRequestMetadata(context.Background())
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("GetRequestMetadata(bad secret) = %v, want an error without the secret", err)
	}
	if _, err := authn.NewClientCredentials(authn.ClientCredentialsConfig{TokenURL: "http://idp.example.com/token"}); !errors.Is(err, authn.ErrInvalidConfig) {
		t.Errorf("NewClientCredentials(invalid) = %v, want ErrInvalidConfig", err)
	}
}
