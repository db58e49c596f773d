package authn

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
	verifier *token.Verifier                          // nil without issuers
	sets     map[string]*keys.Set                     // by issuer URL
	cache    *otter.Cache[[sha256.Size]byte, *cached] // nil when disabled
	cacheAge time.Duration
	maxBytes int
	now      func() time.Time
	mtls     bool
	outage   string

	public map[string]bool // read-only after New

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
		cacheAge: cfg.CacheMaxAge,
		outage:   cfg.IssuerOutage,
	}
	if a.cacheAge == 0 {
		a.cacheAge = DefaultCacheMaxAge
	}
	if a.outage == "" {
		a.outage = OutageDegraded
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
		a.cache = otter.Must(&otter.Options[[sha256.Size]byte, *cached]{
			MaximumSize: size,
			ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[[sha256.Size]byte, *cached]) time.Duration {
				return e.Value.until.Sub(a.now())
			}),
		})
	}
	if err := a.initMetrics(o.meters); err != nil {
		return nil, err
	}
	return a, nil
}

// cached is a verified token in the cache.
type cached struct {
	p     *Principal
	key   *keys.Ref // the key that verified it
	until time.Time // exp, capped at verification + Config.CacheMaxAge
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
		MaxLifetime:  cfg.MaxTokenLifetime,
		Now:          o.now,
	}
	if v.MaxLifetime == 0 {
		v.MaxLifetime = DefaultMaxTokenLifetime
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
		set := keys.New(keys.Config{Issuer: ic.URL, JWKSURL: ic.JWKSURL, Interval: interval, MaxAge: maxAge, Client: o.client, Now: o.now, Log: o.logger})
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
// A token verified once is served from the cache, without a signature
// check and without allocating, until its exp but for at most
// Config.CacheMaxAge, and only while the issuer's key set still holds the
// key that signed it.
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
		if c, ok := a.cache.GetIfPresent(key); ok {
			if a.now().Before(c.until) && c.key.Current() {
				return c.p, nil
			}
			a.cache.Invalidate(key)
		}
	}
	r, err := a.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, publicError(err)
	}
	p := &Principal{
		id: Identity{
			Subject:   r.Subject,
			Issuer:    r.Issuer,
			ClientID:  r.ClientID,
			Audiences: r.Audiences,
			Scopes:    r.Mapped.Scopes,
			Roles:     r.Mapped.Roles,
			Groups:    r.Mapped.Groups,
			Expiry:    r.Expiry,
			Method:    AuthToken,
		},
		claims:  r.Claims,
		payload: r.Payload,
		token:   raw,
	}
	now := a.now()
	if a.cache != nil && now.Before(r.Expiry) {
		until := now.Add(a.cacheAge)
		if r.Expiry.Before(until) {
			until = r.Expiry
		}
		a.cache.Set(key, &cached{p: p, key: r.Key, until: until})
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

// Check reports, without contacting the issuers, whether every issuer has
// usable keys: nil when each one's last fetch succeeded. It is a readiness
// check (the service's /readyz runs it). While an issuer has no keys
// because its endpoints fail, the error makes the service not ready with
// Config.IssuerOutage "not_ready"; otherwise, and whenever known keys keep
// verifying while a refetch fails, the error reports the service as
// degraded but ready: it has a method Degraded that returns true. Before
// the first fetch, Check reports nothing wrong.
func (a *Authenticator) Check(context.Context) error {
	var errs []error
	notReady := false
	for _, iss := range slices.Sorted(maps.Keys(a.sets)) {
		hasKeys, fetched, lastErr := a.sets[iss].Status()
		switch {
		case lastErr == nil:
		case hasKeys:
			errs = append(errs, fmt.Errorf("issuer %q: refetching keys fails, keys fetched %s ago still verify: %v",
				iss, a.now().Sub(fetched).Round(time.Second), lastErr))
		default:
			errs = append(errs, fmt.Errorf("issuer %q: no keys, tokens of this issuer are refused: %v", iss, lastErr))
			notReady = notReady || a.outage == OutageNotReady
		}
	}
	err := errors.Join(errs...)
	if err == nil || notReady {
		return err
	}
	return degraded{err}
}

// degraded is a readiness error that keeps the service ready.
type degraded struct{ error }

// Degraded reports that the service still serves, with less.
func (degraded) Degraded() bool { return true }

func (d degraded) Unwrap() error { return d.error }
