package authn

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Option tunes what a constructor does at run time. What is verified lives
// in Config; options carry dependencies a configuration file cannot (logger,
// meter provider, HTTP client) and code-level overrides. Each option says
// which constructors read it; the others ignore it.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	logger       *slog.Logger
	meters       metric.MeterProvider
	client       *http.Client
	public       []string
	insecure     bool
	now          func() time.Time
	earlyRefresh time.Duration
}

func newOptions(opts []Option) options {
	o := options{
		logger:       slog.Default(),
		meters:       otel.GetMeterProvider(),
		client:       &http.Client{Timeout: 10 * time.Second},
		now:          time.Now,
		earlyRefresh: time.Minute,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithLogger sets the logger of authentication failures (New). The default
// is slog.Default(). A nil logger keeps the default.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithMeterProvider sets where the loam.authn.failures counter goes (New).
// The default is otel.GetMeterProvider(), a no-op until the application
// installs a provider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) {
		if mp != nil {
			o.meters = mp
		}
	})
}

// WithHTTPClient sets the client for discovery and JWKS fetches (New) and
// for the token endpoint (NewClientCredentials). The default is a client
// with a 10s timeout.
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(o *options) {
		if c != nil {
			o.client = c
		}
	})
}

// WithPublicMethods names the methods (full gRPC names,
// "/pkg.Service/Method") that the interceptors of New admit without
// credentials; every other method needs them. The service package passes
// the public methods of its access table, which authz.Authorizer's
// PublicMethods returns, so that authentication and authorization never
// disagree. New fails when a name is not of that form.
func WithPublicMethods(fullMethods ...string) Option {
	return optionFunc(func(o *options) { o.public = append(o.public, fullMethods...) })
}

// WithoutTransportSecurity lets the credentials of NewClientCredentials and
// ForwardCredentials travel on connections without TLS. Use it only on
// loopback and in tests: a bearer token sent in clear text can be replayed
// by anyone who sees it.
func WithoutTransportSecurity() Option {
	return optionFunc(func(o *options) { o.insecure = true })
}

// WithRefreshBefore sets how long before its expiry a client-credentials
// token is replaced (NewClientCredentials). The default is one minute.
func WithRefreshBefore(d time.Duration) Option {
	return optionFunc(func(o *options) {
		o.earlyRefresh = d
	})
}

// withClock replaces time.Now for tests; see export_test.go.
func withClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}

func checkMethodName(m string) error {
	svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	if !strings.HasPrefix(m, "/") || !ok || svc == "" || method == "" || strings.Contains(method, "/") {
		return fmt.Errorf("%w: public method %q is not of the form /pkg.Service/Method", ErrInvalidConfig, m)
	}
	return nil
}
