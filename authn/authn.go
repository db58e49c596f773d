package authn

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/maypok86/otter/v2"
	"go.opentelemetry.io/otel/metric"

	"github.com/loamhq/loam/authn/internal/claims"
	"github.com/loamhq/loam/authn/internal/keys"
	"github.com/loamhq/loam/authn/internal/token"
)

// Authenticator verifies access tokens and client certificates and turns
// them into a Principal, directly with Verify or for every gRPC call with
// UnaryInterceptor and StreamInterceptor.
//
// It is safe for concurrent use. It holds no resources that need closing:
// in-flight key fetches end on their own (within 10s), and the cache's
// clean-up goroutine stops once the Authenticator is unreachable.
type Authenticator struct {
	verifier *token.Verifier                             // nil without issuers
	sets     map[string]*keys.Set                        // by issuer URL
	cache    *otter.Cache[[sha256.Size]byte, *Principal] // nil when disabled
	maxBytes int
	now      func() time.Time
	mtls     bool

	public   map[string]bool
	resolved sync.Map // full method name -> bool (public), for methods with a descriptor

	log      *slog.Logger
	failures metric.Int64Counter
	reasons  map[string]metric.AddOption
}

// New returns an Authenticator for cfg. It validates cfg (errors wrap
// ErrInvalidConfig) but does not contact the issuers: discovery and the key
// set are fetched on the first token of each issuer, and retried at most
// once per Config.JWKSRefetchInterval while they fail, so a service starts
// while its identity provider is briefly down. Call Ready to fetch them
// ahead of traffic.
//
// Options read: WithLogger, WithMeterProvider, WithHTTPClient,
// WithPublicMethods.
func New(cfg Config, opts ...Option) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := newOptions(opts)
	a := &Authenticator{
		maxBytes: orDefault(cfg.MaxTokenBytes, DefaultMaxTokenBytes),
		now:      o.now,
		mtls:     cfg.MTLS,
		log:      o.logger,
		sets:     map[string]*keys.Set{},
		public:   map[string]bool{},
	}
	for _, m := range o.public {
		if err := checkMethodName(m); err != nil {
			return nil, err
		}
		a.public[m] = true
	}
	if len(cfg.Issuers) > 0 {
		a.verifier = a.newVerifier(cfg, o)
	}
	if size := orDefault(cfg.CacheSize, DefaultCacheSize); size > 0 {
		a.cache = otter.Must(&otter.Options[[sha256.Size]byte, *Principal]{
			MaximumSize: size,
			ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[[sha256.Size]byte, *Principal]) time.Duration {
				return e.Value.Expiry.Sub(a.now())
			}),
		})
	}
	if err := a.initMetrics(o.meters); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Authenticator) newVerifier(cfg Config, o options) *token.Verifier {
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = defaultAlgorithms
	}
	v := &token.Verifier{
		Issuers:      make(map[string]*token.Issuer, len(cfg.Issuers)),
		Leeway:       cfg.Leeway,
		MaxBytes:     a.maxBytes,
		RequireATJWT: cfg.RequireAccessTokenType,
		Now:          o.now,
	}
	for _, alg := range algs {
		v.Algorithms = append(v.Algorithms, jose.SignatureAlgorithm(alg))
	}
	interval := cfg.JWKSRefetchInterval
	if interval == 0 {
		interval = DefaultJWKSRefetchInterval
	}
	maxAge := cfg.JWKSMaxAge
	if maxAge == 0 {
		maxAge = DefaultJWKSMaxAge
	}
	for _, ic := range cfg.Issuers {
		set := keys.New(keys.Config{Issuer: ic.URL, JWKSURL: ic.JWKSURL, Interval: interval, MaxAge: maxAge, Client: o.client, Now: o.now})
		a.sets[ic.URL] = set
		v.Issuers[ic.URL] = &token.Issuer{
			URL:               ic.URL,
			Audiences:         ic.Audiences,
			AuthorizedParties: ic.AuthorizedParties,
			Keys:              set,
			Mapper:            mapper(ic),
		}
	}
	return v
}

func mapper(ic IssuerConfig) claims.Mapper {
	m := claims.Generic()
	if ic.Claims.Preset == "keycloak" {
		clients := ic.Claims.Clients
		if len(clients) == 0 {
			clients = ic.Audiences
		}
		m = claims.Keycloak(clients)
	}
	for _, o := range []struct{ dst, src *[]string }{{&m.Roles, &ic.Claims.Roles}, {&m.Groups, &ic.Claims.Groups}, {&m.Scopes, &ic.Claims.Scopes}} {
		if len(*o.src) > 0 {
			*o.dst = *o.src
		}
	}
	return m
}

func orDefault(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// Verify checks a bearer access token and returns its principal.
//
// Checks, in order: size (before any parsing), compact JWS structure, alg
// in Config.Algorithms, no jwk/jku/x5u/crit header, typ, a trusted iss, a
// key of that issuer's JWKS with the header's kid, the signature, exp
// (required), nbf, iat, aud against the issuer's audiences, azp when
// configured, sub (required), and the JSON types of the mapped claims.
//
// A token verified once is served from the cache until its exp, without a
// signature check and without allocating.
//
// Errors are *Error values matching one of the Err sentinels, or ctx.Err()
// when ctx ends while the issuer's keys are being fetched. Verify does not
// log or count failures; the interceptors do.
func (a *Authenticator) Verify(ctx context.Context, raw string) (*Principal, error) {
	switch {
	case raw == "":
		return nil, ErrMissing
	case len(raw) > a.maxBytes:
		return nil, &Error{Reason: token.ReasonTooLarge, Detail: fmt.Sprintf("token of %d bytes exceeds the limit of %d", len(raw), a.maxBytes)}
	case a.verifier == nil:
		return nil, &Error{Reason: token.ReasonIssuer, Detail: "no issuers are configured"}
	}
	var key [sha256.Size]byte
	if a.cache != nil {
		// sha256 neither keeps nor modifies its input, so the string's
		// bytes are hashed in place, without a copy.
		key = sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
		if p, ok := a.cache.GetIfPresent(key); ok && a.now().Before(p.Expiry) {
			return p, nil
		}
	}
	r, err := a.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, publicError(err)
	}
	p := &Principal{
		Subject:   r.Subject,
		Issuer:    r.Issuer,
		ClientID:  r.ClientID,
		Audiences: r.Audiences,
		Scopes:    r.Mapped.Scopes,
		Roles:     r.Mapped.Roles,
		Groups:    r.Mapped.Groups,
		Expiry:    r.Expiry,
		Method:    AuthToken,
		claims:    r.Claims,
		payload:   r.Payload,
		token:     raw,
	}
	if a.cache != nil && a.now().Before(p.Expiry) {
		a.cache.Set(key, p)
	}
	return p, nil
}

// Ready fetches the discovery document and key set of every issuer that
// has none yet, and reports the failures joined (wrapping ErrUnavailable's
// reason). It is optional: use it as a readiness check or to warm up at
// start. It honours ctx, and the refetch interval like any other fetch.
func (a *Authenticator) Ready(ctx context.Context) error {
	var errs []error
	for iss, s := range a.sets {
		if err := s.Warm(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, &Error{Reason: token.ReasonUnavailable, Detail: fmt.Sprintf("issuer %q: %v", iss, err)})
		}
	}
	return errors.Join(errs...)
}
