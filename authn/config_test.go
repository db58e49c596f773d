package authn_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/config"
)

func TestConfigValidate(t *testing.T) {
	good := func() authn.Config {
		return authn.Config{Issuers: []authn.IssuerConfig{{URL: "https://sso.example.com/realms/acme", Audiences: []string{"api"}}}}
	}
	tests := []struct {
		name string
		edit func(*authn.Config)
		want []string // substrings naming the bad keys; none: valid
	}{
		{"valid", func(*authn.Config) {}, nil},
		{"loopback http issuer", func(c *authn.Config) { c.Issuers[0].URL = "http://127.0.0.1:8080" }, nil},
		{"mtls only", func(c *authn.Config) { c.Issuers = nil; c.MTLS = true }, nil},
		{"no issuer", func(c *authn.Config) { c.Issuers = nil }, []string{"issuers:"}},
		{"http issuer", func(c *authn.Config) { c.Issuers[0].URL = "http://sso.example.com" }, []string{"issuers[0].url:"}},
		{"relative issuer", func(c *authn.Config) { c.Issuers[0].URL = "sso" }, []string{"issuers[0].url:"}},
		{"duplicate issuer", func(c *authn.Config) { c.Issuers = append(c.Issuers, c.Issuers[0]) }, []string{"issuers[1].url:"}},
		{"bad jwks url", func(c *authn.Config) { c.Issuers[0].JWKSURL = "ftp://x" }, []string{"issuers[0].jwks_url:"}},
		{"no audience", func(c *authn.Config) { c.Issuers[0].Audiences = nil }, []string{"issuers[0].audiences:"}},
		{"unknown preset", func(c *authn.Config) { c.Issuers[0].Claims.Preset = "okta" }, []string{"issuers[0].claims.preset:"}},
		{"clients without keycloak", func(c *authn.Config) { c.Issuers[0].Claims.Clients = []string{"x"} }, []string{"issuers[0].claims.clients:"}},
		{"HS256", func(c *authn.Config) { c.Algorithms = []string{"RS256", "HS256"} }, []string{"algorithms[1]:"}},
		{"none", func(c *authn.Config) { c.Algorithms = []string{"none"} }, []string{"algorithms[0]:"}},
		{"negative leeway", func(c *authn.Config) { c.Leeway = -time.Second }, []string{"leeway:"}},
		{"huge max token", func(c *authn.Config) { c.MaxTokenBytes = 1 << 30 }, []string{"max_token_bytes:"}},
		{"negative interval", func(c *authn.Config) { c.JWKSRefetchInterval = -1 }, []string{"jwks_refetch_interval:"}},
		{"client half set", func(c *authn.Config) { c.Client.ClientID = "svc" }, []string{"client.token_url:", "client.client_secret:"}},
		{"client complete", func(c *authn.Config) {
			c.Client = authn.ClientCredentialsConfig{TokenURL: "https://sso.example.com/token", ClientID: "svc", ClientSecret: config.NewSecret("x")}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.edit(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, authn.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			for _, key := range tt.want {
				if !strings.Contains(err.Error(), key) {
					t.Errorf("Validate() = %q, want it to name %q", err, key)
				}
			}
			if _, err := authn.New(cfg); !errors.Is(err, authn.ErrInvalidConfig) {
				t.Errorf("New(invalid) = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestNewRejectsBadPublicMethod(t *testing.T) {
	cfg := authn.Config{MTLS: true}
	if _, err := authn.New(cfg, authn.WithPublicMethods("grpc.health.v1.Health/Check")); !errors.Is(err, authn.ErrInvalidConfig) {
		t.Errorf("New(WithPublicMethods(no leading slash)) = %v, want ErrInvalidConfig", err)
	}
}

// TestSecretNeverPrinted: the client secret stays redacted in errors and
// printed configuration.
func TestSecretNeverPrinted(t *testing.T) {
	cfg := authn.Config{MTLS: true, Client: authn.ClientCredentialsConfig{ClientSecret: config.NewSecret("hunter2")}}
	for _, s := range []string{cfg.Validate().Error(), fmtV(cfg)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("output %q contains the secret", s)
		}
	}
}
