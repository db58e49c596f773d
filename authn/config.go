package authn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/loamhq/loam/config"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultMaxTokenBytes       = 16 << 10
	DefaultCacheSize           = 10_000
	DefaultJWKSRefetchInterval = 10 * time.Second
	DefaultJWKSMaxAge          = time.Hour
	DefaultCacheMaxAge         = 5 * time.Minute
	DefaultMaxTokenLifetime    = 24 * time.Hour
)

// What readiness reports while an issuer has no usable keys; see
// Config.IssuerOutage.
const (
	OutageDegraded = "degraded"
	OutageNotReady = "not_ready"
)

// defaultAlgorithms are the signing algorithms accepted when
// Config.Algorithms is empty.
var defaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// allowedAlgorithms are the asymmetric JWS algorithms Config.Algorithms may
// name. "none" and the HMAC algorithms are refused: a resource server that
// shares a secret with the issuer can mint tokens itself.
var allowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is the authn configuration section (the "authn" key of a Loam
// service's configuration). The zero value accepts nothing; zero numeric
// fields take the defaults above, except Leeway, whose zero means none.
type Config struct {
	// Issuers are the trusted token issuers. At least one is required
	// unless MTLS is set.
	Issuers []IssuerConfig `koanf:"issuers"`
	// Algorithms are the accepted JWS algorithms; RS256, ES256 and EdDSA when
	// empty. Only asymmetric algorithms are allowed.
	Algorithms []string `koanf:"algorithms"`
	// Leeway is the clock skew tolerated on exp, nbf and iat.
	Leeway time.Duration `koanf:"leeway" default:"30s"`
	// MaxTokenBytes is the largest token accepted; longer ones are refused
	// before any parsing.
	MaxTokenBytes int `koanf:"max_token_bytes" default:"16384"`
	// CacheSize bounds the verified-token cache, in tokens. A negative size
	// disables the cache.
	CacheSize int `koanf:"cache_size" default:"10000"`
	// CacheMaxAge bounds how long a verified token is served from the
	// cache before its signature is checked again, whatever its exp. A
	// cache hit also checks that the issuer's key set, as last fetched,
	// still holds the key that signed the token, so a key the issuer
	// removes stops admitting cached tokens at the next fetch of the set
	// (jwks_max_age at the latest).
	CacheMaxAge time.Duration `koanf:"cache_max_age" default:"5m" validate:"min=0s"`
	// MaxTokenLifetime refuses tokens valid for longer than this: exp minus
	// iat, or exp minus the current time when iat is absent. It bounds how
	// long a token, once leaked, can be replayed. Zero means 24h.
	MaxTokenLifetime time.Duration `koanf:"max_token_lifetime" default:"24h" validate:"min=0s"`
	// IssuerOutage is what readiness (Check) reports while an issuer has
	// no keys because its endpoints fail: "degraded" (the default) keeps
	// the service ready, so its public methods and other issuers keep
	// serving; "not_ready" takes it out of load balancing. A failing
	// refetch while keys are known is always only degraded: those keys
	// keep verifying.
	IssuerOutage string `koanf:"issuer_outage" default:"degraded" validate:"omitempty,oneof=degraded not_ready"`
	// JWKSRefetchInterval is the least time between two fetches of an
	// issuer's discovery document and key set (Keycloak adapters call it
	// min-time-between-jwks-requests, and default to 10s as Loam does).
	JWKSRefetchInterval time.Duration `koanf:"jwks_refetch_interval" default:"10s"`
	// JWKSMaxAge is how long an issuer's key set is used before it is
	// refetched in the background, so that a key the issuer removed (a
	// retired or compromised key) stops verifying tokens, cached ones
	// included (see CacheMaxAge). A negative value never refetches a set
	// that still has the key asked for.
	JWKSMaxAge time.Duration `koanf:"jwks_max_age" default:"1h"`
	// RequireAccessTokenType refuses tokens whose typ header is not at+jwt
	// (RFC 9068). Off by default, because Keycloak and others send typ JWT;
	// either way, any other typ (such as an ID token's or a logout token's
	// explicit type) is refused.
	RequireAccessTokenType bool `koanf:"require_access_token_type"`
	// MTLS accepts a verified client certificate as the caller's identity
	// when the call carries no bearer token.
	MTLS bool `koanf:"mtls"`
	// Client is the service's own identity for outbound calls; see
	// NewClientCredentials. Optional.
	Client ClientCredentialsConfig `koanf:"client"`
}

// IssuerConfig is one trusted issuer.
type IssuerConfig struct {
	// URL is the issuer identifier, exactly as in the tokens' iss claim,
	// such as "https://sso.example.com/realms/acme". https is required,
	// except on loopback hosts.
	URL string `koanf:"url"`
	// JWKSURL skips discovery when set.
	JWKSURL string `koanf:"jwks_url"`
	// Audiences: a token's aud must name at least one. Required.
	Audiences []string `koanf:"audiences"`
	// AuthorizedParties, when set, requires the azp claim to be one of
	// them.
	AuthorizedParties []string `koanf:"authorized_parties"`
	// Claims says where roles, groups and scopes are.
	Claims ClaimsConfig `koanf:"claims"`
}

// ClaimsConfig maps token claims to Principal.Roles, Groups and Scopes.
// Paths are dot-separated; a claim whose whole name equals the path is
// taken first, so namespaced claims such as "https://example.com/roles" work.
type ClaimsConfig struct {
	// Preset is "generic" (the default: roles, groups, scope or scp) or
	// "keycloak" (realm_access.roles, resource_access.<client>.roles,
	// groups, scope).
	Preset string `koanf:"preset"`
	// Clients are the Keycloak clients whose resource_access roles count;
	// the issuer's audiences when empty. Only for the keycloak preset.
	Clients []string `koanf:"clients"`
	// Roles, Groups and Scopes replace the preset's paths when set.
	Roles  []string `koanf:"roles"`
	Groups []string `koanf:"groups"`
	Scopes []string `koanf:"scopes"`
}

// ClientCredentialsConfig is the service's own OAuth 2.0 client for
// outbound calls (the client credentials grant).
type ClientCredentialsConfig struct {
	// TokenURL is the issuer's token endpoint. https is required, except
	// on loopback hosts.
	TokenURL string `koanf:"token_url"`
	// ClientID and ClientSecret authenticate the service.
	ClientID     string        `koanf:"client_id"`
	ClientSecret config.Secret `koanf:"client_secret"`
	// Scopes are requested with every token.
	Scopes []string `koanf:"scopes"`
	// Audience, when set, is sent as the "audience" parameter (Auth0 and
	// others need it to choose the resource).
	Audience string `koanf:"audience"`
}

// IsZero reports whether no field is set.
func (c ClientCredentialsConfig) IsZero() bool {
	return c.TokenURL == "" && c.ClientID == "" && c.ClientSecret.IsZero() && len(c.Scopes) == 0 && c.Audience == ""
}

// Validate reports every problem of c, joined, each naming its key relative
// to the section ("issuers[0].audiences: ..."). All wrap ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if len(c.Issuers) == 0 && !c.MTLS {
		bad("issuers", "at least one issuer is required unless mtls is true")
	}
	for i, is := range c.Issuers {
		key := fmt.Sprintf("issuers[%d]", i)
		if err := checkURL(is.URL); err != nil {
			bad(key+".url", "%v", err)
		}
		if slices.ContainsFunc(c.Issuers[:i], func(o IssuerConfig) bool { return o.URL == is.URL }) {
			bad(key+".url", "%q is listed twice", is.URL)
		}
		if is.JWKSURL != "" {
			if err := checkURL(is.JWKSURL); err != nil {
				bad(key+".jwks_url", "%v", err)
			}
		}
		if len(is.Audiences) == 0 || slices.Contains(is.Audiences, "") {
			bad(key+".audiences", "at least one non-empty audience is required")
		}
		switch is.Claims.Preset {
		case "", "generic":
			if len(is.Claims.Clients) > 0 {
				bad(key+".claims.clients", "only applies to the keycloak preset")
			}
		case "keycloak":
		default:
			bad(key+".claims.preset", "%q is not generic or keycloak", is.Claims.Preset)
		}
	}
	for i, alg := range c.Algorithms {
		if !slices.Contains(allowedAlgorithms, alg) {
			bad(fmt.Sprintf("algorithms[%d]", i), "%q is not one of %v (none and HMAC are never accepted)", alg, allowedAlgorithms)
		}
	}
	if c.Leeway < 0 || c.Leeway > 5*time.Minute {
		bad("leeway", "%s is outside 0s..5m", c.Leeway)
	}
	if c.MaxTokenBytes < 0 || c.MaxTokenBytes > 1<<20 {
		bad("max_token_bytes", "%d is outside 0..1048576", c.MaxTokenBytes)
	}
	if c.JWKSRefetchInterval < 0 {
		bad("jwks_refetch_interval", "%s is negative", c.JWKSRefetchInterval)
	}
	if c.CacheMaxAge < 0 {
		bad("cache_max_age", "%s is negative", c.CacheMaxAge)
	}
	if c.MaxTokenLifetime < 0 {
		bad("max_token_lifetime", "%s is negative", c.MaxTokenLifetime)
	}
	switch c.IssuerOutage {
	case "", OutageDegraded, OutageNotReady:
	default:
		bad("issuer_outage", "%q is not %s or %s", c.IssuerOutage, OutageDegraded, OutageNotReady)
	}
	if !c.Client.IsZero() {
		for _, err := range c.Client.problems() {
			errs = append(errs, fmt.Errorf("%w: client.%w", ErrInvalidConfig, err))
		}
	}
	return errors.Join(errs...)
}

// Validate reports every problem of c, joined, each naming its key. All
// wrap ErrInvalidConfig.
func (c ClientCredentialsConfig) Validate() error {
	var errs []error
	for _, err := range c.problems() {
		errs = append(errs, fmt.Errorf("%w: %w", ErrInvalidConfig, err))
	}
	return errors.Join(errs...)
}

func (c ClientCredentialsConfig) problems() []error {
	var errs []error
	if err := checkURL(c.TokenURL); err != nil {
		errs = append(errs, fmt.Errorf("token_url: %w", err))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id: is required"))
	}
	if c.ClientSecret.IsZero() {
		errs = append(errs, errors.New("client_secret: is required"))
	}
	return errs
}

// checkURL requires an absolute https URL, or http on a loopback host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute URL without query or fragment", s)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%q must use https (http only on a loopback host)", s)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
