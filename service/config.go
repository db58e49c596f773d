package service

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events/eventbus"
	"github.com/loamhq/loam/telemetry"
)

// Production is the environment name in which reflection is off by default
// and fault injection refuses to start unless explicitly allowed.
const Production = "production"

// Config is the standard configuration of a Loam service: one section per
// part of the SDK. Embed it in the service's own configuration struct, so
// one file configures the whole service:
//
//	type Config struct {
//		service.Config
//		Storage StorageConfig `koanf:"storage"`
//	}
//	cfg, err := config.Load[Config](ctx, config.WithEnvPrefix("CAPTURES"))
type Config struct {
	// Service is the `service` section: identity, addresses, limits,
	// shutdown, fault injection and client defaults.
	Service Settings `koanf:"service"`
	// Telemetry is the `telemetry` section.
	Telemetry telemetry.Config `koanf:"telemetry"`
	// Authn is the `authn` section. With a trusted issuer or mtls set, the
	// server authenticates every call except health checks, reflection and
	// methods whose access rule is public.
	Authn authn.Config `koanf:"authn"`
	// Authz is the `authz` section: roles and their permissions, and the
	// rules of methods whose .proto carries none.
	Authz authz.Config `koanf:"authz"`
	// Cache is the `cache` section: the Store that Server.Cache returns.
	// Its namespace defaults to service.name.
	Cache cache.Config `koanf:"cache"`
	// Events is the `events` section: the Bus that Server.Bus returns. Its
	// source defaults to "//" and service.name.
	Events eventbus.Config `koanf:"events"`
}

// Settings is the `service` section.
type Settings struct {
	// Name is the service's name in telemetry and logs. Required.
	Name string `koanf:"name" validate:"required"`
	// Version is the service's version, such as a release tag or commit.
	Version string `koanf:"version"`
	// Environment names where the service runs, such as development,
	// staging or production. Loaded with config.Load, it defaults to the
	// environment whose file was read (WithEnvironment, --env or
	// LOAM_ENV), so the production rules apply to production's file
	// however it was chosen. In a Config built in code, empty means
	// LOAM_ENV, else development.
	Environment string `koanf:"environment" default:"${environment}"`
	// ListenAddr is the gRPC server's address.
	ListenAddr string `koanf:"listen_addr" default:"127.0.0.1:8080" validate:"listen_addr"`
	// AdminAddr is the admin HTTP server's address (/metrics, /healthz,
	// /readyz, /debug/pprof). Empty turns the admin server off.
	AdminAddr string `koanf:"admin_addr" default:"127.0.0.1:9090" validate:"omitempty,listen_addr"`
	// Reflection turns gRPC server reflection on or off. Unset means on,
	// except in production.
	Reflection *bool `koanf:"reflection"`
	// Pprof serves /debug/pprof on the admin server.
	Pprof bool `koanf:"pprof"`
	// AllowUnauthenticated serves without authentication when the authn
	// section names no issuer and no mtls: every caller is anonymous and
	// no access rule is enforced, so every method is open. It is for local
	// development only: refused in production and next to an authn
	// section. Without it, a server with no authentication refuses to
	// start while any method needs a principal.
	AllowUnauthenticated bool `koanf:"allow_unauthenticated"`
	// TLS serves gRPC over TLS, and verifies client certificates for
	// authn.mtls. Empty serves plaintext, for a mesh that encrypts between
	// sidecars or for loopback.
	TLS TLS `koanf:"tls"`
	// PublicEndpoint says the service faces callers outside the trust
	// boundary: their trace context is linked, never trusted as parent.
	// Methods whose access rule is public are treated so either way.
	PublicEndpoint bool `koanf:"public_endpoint"`
	// DrainDelay is how long the server keeps serving after it reports
	// NOT_SERVING, so load balancers stop sending before it stops
	// accepting.
	DrainDelay time.Duration `koanf:"drain_delay" default:"5s" validate:"min=0s"`
	// ShutdownTimeout bounds the drain of in-flight RPCs; when it runs out,
	// the remaining RPCs are cancelled. Zero means 15s.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout" default:"15s" validate:"min=0s"`
	// Limits bounds what one client can ask of the server.
	Limits Limits `koanf:"limits"`
	// Faults configures fault injection, for resilience testing.
	Faults Faults `koanf:"faults"`
	// Client holds the defaults of connections made with Dial.
	Client ClientSettings `koanf:"client"`
}

// TLS is the `service.tls` section: the server's certificate and the
// authorities whose client certificates it accepts. The files are read at
// start-up, where a missing or bad file is an error, and read again when
// they change (as a rotated Kubernetes secret does), without a restart;
// a bad new file is logged and the last good one stays in use.
type TLS struct {
	// CertFile is the PEM certificate chain of the server. Required with
	// KeyFile.
	CertFile string `koanf:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `koanf:"key_file"`
	// ClientCAFile holds the PEM certificates of the authorities that sign
	// client certificates. With it, a client certificate is verified when
	// the client presents one; authn.mtls requires it.
	ClientCAFile string `koanf:"client_ca_file"`
	// RequireClientCert refuses, in the handshake, clients without a
	// certificate that ClientCAFile verifies. Without it, such clients
	// may still authenticate with a bearer token.
	RequireClientCert bool `koanf:"require_client_cert"`
}

// enabled reports whether the section asks for TLS.
func (t TLS) enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Limits bounds what clients can ask of the server. The package doc has
// the defaults in one table.
type Limits struct {
	// MaxRecvMsgBytes is the largest request message accepted. Zero means
	// 4 MiB.
	MaxRecvMsgBytes int `koanf:"max_recv_msg_bytes" default:"4194304" validate:"min=0"`
	// MaxSendMsgBytes is the largest response message sent. Zero means
	// 4 MiB.
	MaxSendMsgBytes int `koanf:"max_send_msg_bytes" default:"4194304" validate:"min=0"`
	// MaxHeaderListBytes is the largest header (metadata) list of a
	// request; a larger one is refused before any interceptor runs. Zero
	// means 64 KiB, room for a 16 KiB token and then some.
	MaxHeaderListBytes uint32 `koanf:"max_header_list_bytes" default:"65536"`
	// MaxConcurrentStreams bounds the concurrent RPCs of one connection.
	// Zero means 1000.
	MaxConcurrentStreams uint32 `koanf:"max_concurrent_streams" default:"1000"`
	// MaxConnections bounds the open connections; past it, new ones wait
	// in the kernel's accept queue until one closes. Zero means 10000; a
	// negative value means no bound.
	MaxConnections int `koanf:"max_connections" default:"10000"`
	// HandshakeTimeout bounds how long a new connection may take to
	// finish its TLS and HTTP/2 handshakes. Zero means 10s.
	HandshakeTimeout time.Duration `koanf:"handshake_timeout" default:"10s" validate:"min=0s"`
	// MaxConcurrentCalls bounds the calls the server runs at once, streams
	// included; a call past it is refused at once with RESOURCE_EXHAUSTED
	// (load shedding) and counted. Zero means no bound.
	MaxConcurrentCalls int `koanf:"max_concurrent_calls" default:"0" validate:"min=0"`
	// DefaultCallTimeout is the deadline of a unary call whose client set
	// none, so that no call runs forever. Zero means 30s; a negative value
	// sets none. Streams are not bounded by it.
	DefaultCallTimeout time.Duration `koanf:"default_call_timeout" default:"30s"`
	// RateLimits limit how often one principal may call the methods that
	// match, each with a token bucket; a call past it is refused with
	// RESOURCE_EXHAUSTED and counted. The first rule that matches a method
	// applies.
	RateLimits []RateLimit `koanf:"rate_limits"`
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client to check it is still there. Zero means 2h.
	KeepaliveTime time.Duration `koanf:"keepalive_time" default:"2h" validate:"min=0s"`
	// KeepaliveTimeout is how long the server waits for the answer to that
	// ping before it closes the connection. Zero means 20s.
	KeepaliveTimeout time.Duration `koanf:"keepalive_timeout" default:"20s" validate:"min=0s"`
	// KeepaliveMinTime is the shortest interval between client pings that
	// the server tolerates; a client pinging more often is disconnected.
	KeepaliveMinTime time.Duration `koanf:"keepalive_min_time" default:"20s" validate:"min=0s"`
	// KeepalivePermitWithoutStream lets clients ping with no RPC in flight.
	KeepalivePermitWithoutStream bool `koanf:"keepalive_permit_without_stream"`
	// MaxConnectionAge closes connections after this long (plus or minus
	// 10%), with a GOAWAY that lets clients reconnect, so that they
	// rebalance across replicas. Zero means never.
	MaxConnectionAge time.Duration `koanf:"max_connection_age" default:"30m" validate:"min=0s"`
	// MaxConnectionAgeGrace is how long calls in flight on a connection
	// that reached MaxConnectionAge may still run before it is closed.
	// Zero means until they end.
	MaxConnectionAgeGrace time.Duration `koanf:"max_connection_age_grace" default:"1m" validate:"min=0s"`
	// MaxConnectionIdle closes connections idle for this long. Zero means
	// never.
	MaxConnectionIdle time.Duration `koanf:"max_connection_idle" default:"0s" validate:"min=0s"`
}

// RateLimit is a token bucket per principal on the methods that match.
type RateLimit struct {
	// Method is a full method name, /package.Service/Method, or
	// /package.Service/* for every method of a service.
	Method string `koanf:"method" validate:"required"`
	// PerSecond is the sustained rate of calls one principal may make.
	PerSecond float64 `koanf:"per_second" validate:"gt=0"`
	// Burst is how many calls one principal may make at once. Zero means
	// PerSecond rounded up, and at least 1.
	Burst int `koanf:"burst" validate:"min=0"`
}

// Faults configures fault injection: delays and errors injected into
// chosen methods, to test how callers cope. It is off by default and
// refuses to turn on in production unless AllowInProduction is set.
type Faults struct {
	// Enabled turns fault injection on.
	Enabled bool `koanf:"enabled"`
	// AllowInProduction lets Enabled take effect in production.
	AllowInProduction bool `koanf:"allow_in_production"`
	// FromHeaders lets each request ask for a fault with the metadata
	// loam-fault-delay (a duration) and loam-fault-abort (a gRPC code
	// name such as UNAVAILABLE).
	FromHeaders bool `koanf:"from_headers"`
	// MaxHeaderDelay caps the delay a request may ask for with
	// loam-fault-delay, so that a header cannot hold a call, and the
	// resources it holds, for long. Zero means 10s.
	MaxHeaderDelay time.Duration `koanf:"max_header_delay" default:"10s" validate:"min=0s"`
	// Rules inject faults into the methods they match.
	Rules []FaultRule `koanf:"rules"`
}

// FaultRule injects a fault into the RPCs of the methods it matches.
type FaultRule struct {
	// Method is a full method name, /package.Service/Method, or
	// /package.Service/* for every method of a service.
	Method string `koanf:"method" validate:"required"`
	// Delay is added before the handler runs.
	Delay time.Duration `koanf:"delay" validate:"min=0s"`
	// Abort is the gRPC code name returned instead of calling the handler,
	// such as UNAVAILABLE. Empty means no abort.
	Abort string `koanf:"abort"`
	// Percent is the share of matching RPCs affected, from 0 to 100.
	// Unset means 100; 0 means none, which turns a rule off.
	Percent *float64 `koanf:"percent" validate:"omitempty,min=0,max=100"`
}

// ClientSettings holds the defaults of connections made with Dial.
type ClientSettings struct {
	// Timeout is the deadline given to unary calls whose context has none.
	// Zero means 10s; a negative value gives no default deadline.
	Timeout time.Duration `koanf:"timeout" default:"10s"`
	// RetryMaxAttempts is the most attempts of an idempotent call that
	// failed with UNAVAILABLE, the first included. 1 turns retries off;
	// zero means 3.
	RetryMaxAttempts int `koanf:"retry_max_attempts" default:"3" validate:"min=0,max=5"`
	// RetryInitialBackoff is the upper bound of the first random backoff.
	// Zero means 100ms.
	RetryInitialBackoff time.Duration `koanf:"retry_initial_backoff" default:"100ms" validate:"min=0s"`
	// RetryMaxBackoff caps the backoff between attempts. Zero means 1s.
	RetryMaxBackoff time.Duration `koanf:"retry_max_backoff" default:"1s" validate:"min=0s"`
}

// Validate reports every rule of c that `validate` tags cannot say, each
// naming its key; config.Load checks the tags. New calls Validate, so a
// Config built in code is checked too.
func (c Config) Validate() error {
	var errs []error
	s := c.Service
	if s.Name == "" {
		errs = append(errs, errors.New("service.name: is required"))
	}
	if s.ListenAddr == "" {
		errs = append(errs, errors.New("service.listen_addr: is required"))
	}
	for i, r := range s.Limits.RateLimits {
		if _, _, ok := splitMethodPattern(r.Method); !ok {
			errs = append(errs, fmt.Errorf("service.limits.rate_limits[%d].method: %q is not /package.Service/Method or /package.Service/*", i, r.Method))
		}
		if r.PerSecond <= 0 {
			errs = append(errs, fmt.Errorf("service.limits.rate_limits[%d].per_second: %v is not above 0", i, r.PerSecond))
		}
		if r.Burst < 0 {
			errs = append(errs, fmt.Errorf("service.limits.rate_limits[%d].burst: %d is negative", i, r.Burst))
		}
	}
	if s.Limits.MaxConcurrentCalls < 0 {
		errs = append(errs, fmt.Errorf("service.limits.max_concurrent_calls: %d is negative", s.Limits.MaxConcurrentCalls))
	}
	for i, r := range s.Faults.Rules {
		if _, _, ok := splitMethodPattern(r.Method); !ok {
			errs = append(errs, fmt.Errorf("service.faults.rules[%d].method: %q is not /package.Service/Method or /package.Service/*", i, r.Method))
		}
		if r.Abort != "" {
			if _, ok := codeByName(r.Abort); !ok {
				errs = append(errs, fmt.Errorf("service.faults.rules[%d].abort: %q is not a gRPC code name such as UNAVAILABLE", i, r.Abort))
			}
		}
		if r.Delay == 0 && r.Abort == "" {
			errs = append(errs, fmt.Errorf("service.faults.rules[%d]: sets neither delay nor abort", i))
		}
		if r.Percent != nil && (*r.Percent < 0 || *r.Percent > 100) {
			errs = append(errs, fmt.Errorf("service.faults.rules[%d].percent: %v is outside 0..100", i, *r.Percent))
		}
	}
	if s.Faults.Enabled && s.environment() == Production && !s.Faults.AllowInProduction {
		errs = append(errs, errors.New("service.faults.enabled: fault injection refuses to run in production; set service.faults.allow_in_production to mean it"))
	}
	if cl := s.Client.withDefaults(); cl.RetryMaxBackoff < cl.RetryInitialBackoff {
		errs = append(errs, fmt.Errorf("service.client.retry_max_backoff: %v is below retry_initial_backoff %v", cl.RetryMaxBackoff, cl.RetryInitialBackoff))
	}
	errs = append(errs, c.authProblems()...)
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.cache().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Events.Validate(); err != nil {
		errs = append(errs, err)
	}
	if d := c.Events.Dedup; d.Store == eventbus.DedupRedis && !d.Disabled && !c.Cache.Redis.Enabled() {
		errs = append(errs, errors.New("events.dedup.store: redis keeps processed event IDs in the cache's Redis, and cache.redis.addresses is empty"))
	}
	if err := c.Authz.Validate(); err != nil {
		errs = append(errs, err) // "authz: invalid configuration: <key>: ..."
	}
	if authnConfigured(c.Authn) {
		if err := c.Authn.Validate(); err != nil {
			errs = append(errs, err) // "authn: invalid configuration: <key>: ..."
		}
	}
	return errors.Join(errs...)
}

// cache returns the cache section with its namespace defaulted to the
// service's name.
func (c Config) cache() cache.Config {
	cc := c.Cache
	if cc.Namespace == "" {
		cc.Namespace = c.Service.Name
	}
	return cc
}

// authProblems reports the rules that keep a server from starting open:
// production authenticates callers, allow_unauthenticated is a development
// switch, and client certificates need TLS with a client authority.
func (c Config) authProblems() []error {
	var errs []error
	s := c.Service
	authn := authnConfigured(c.Authn)
	if s.environment() == Production && !authn {
		errs = append(errs, errors.New("authn: production requires authentication: set authn.issuers or authn.mtls"))
	}
	if s.AllowUnauthenticated {
		switch {
		case s.environment() == Production:
			errs = append(errs, errors.New("service.allow_unauthenticated: refused in production, where every call must be authenticated"))
		case authn:
			errs = append(errs, errors.New("service.allow_unauthenticated: contradicts the authn section, which asks for authentication; remove one"))
		}
	}
	t := s.TLS
	if t.enabled() && (t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, errors.New("service.tls: set both cert_file and key_file"))
	}
	if (t.ClientCAFile != "" || t.RequireClientCert) && !t.enabled() {
		errs = append(errs, errors.New("service.tls: client_ca_file and require_client_cert need cert_file and key_file"))
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		errs = append(errs, errors.New("service.tls.require_client_cert: needs client_ca_file to verify the certificates"))
	}
	return errs
}

// Effective returns c as the server applies it: zero fields that document
// a default set to the default, the environment resolved (LOAM_ENV, else
// development) and reflection set to whether it is on. `loam config
// explain` shows these values.
func (c Config) Effective() Config {
	c.Service = c.Service.withDefaults()
	c.Service.Environment = c.Service.environment()
	on := c.Service.reflection()
	c.Service.Reflection = &on
	c.Cache = c.cache()
	return c
}

// withDefaults returns s with zero fields that document a default set to it,
// so a Settings built in code behaves as one loaded from a file.
func (s Settings) withDefaults() Settings {
	if s.ShutdownTimeout == 0 {
		s.ShutdownTimeout = 15 * time.Second
	}
	if s.Limits.MaxRecvMsgBytes == 0 {
		s.Limits.MaxRecvMsgBytes = 4 << 20
	}
	if s.Limits.MaxSendMsgBytes == 0 {
		s.Limits.MaxSendMsgBytes = 4 << 20
	}
	if s.Limits.MaxConcurrentStreams == 0 {
		s.Limits.MaxConcurrentStreams = 1000
	}
	if s.Limits.MaxHeaderListBytes == 0 {
		s.Limits.MaxHeaderListBytes = 64 << 10
	}
	if s.Limits.MaxConnections == 0 {
		s.Limits.MaxConnections = 10000
	}
	if s.Limits.HandshakeTimeout == 0 {
		s.Limits.HandshakeTimeout = 10 * time.Second
	}
	if s.Limits.DefaultCallTimeout == 0 {
		s.Limits.DefaultCallTimeout = 30 * time.Second
	}
	if s.Limits.KeepaliveTime == 0 {
		s.Limits.KeepaliveTime = 2 * time.Hour
	}
	if s.Limits.KeepaliveTimeout == 0 {
		s.Limits.KeepaliveTimeout = 20 * time.Second
	}
	s.Client = s.Client.withDefaults()
	return s
}

// withDefaults returns c with zero fields set to their documented defaults.
func (c ClientSettings) withDefaults() ClientSettings {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.RetryMaxAttempts == 0 {
		c.RetryMaxAttempts = 3
	}
	if c.RetryInitialBackoff == 0 {
		c.RetryInitialBackoff = 100 * time.Millisecond
	}
	if c.RetryMaxBackoff == 0 {
		c.RetryMaxBackoff = time.Second
	}
	return c
}

// environment returns the environment name, resolved as Settings.Environment
// documents.
func (s Settings) environment() string {
	if s.Environment != "" {
		return s.Environment
	}
	if env := os.Getenv("LOAM_ENV"); env != "" {
		return env
	}
	return "development"
}

func (s Settings) reflection() bool {
	if s.Reflection != nil {
		return *s.Reflection
	}
	return s.environment() != Production
}

// splitMethodPattern splits /package.Service/Method (or /package.Service/*)
// into service and method.
func splitMethodPattern(p string) (svc, method string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return "", "", false
	}
	svc, method, ok = strings.Cut(rest, "/")
	return svc, method, ok && svc != "" && method != "" && !strings.Contains(method, "/")
}

// codeByName returns the gRPC code with the canonical name n (UNAVAILABLE,
// DEADLINE_EXCEEDED, ...), case-insensitively.
func codeByName(n string) (codes.Code, bool) {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + strings.ToUpper(n) + `"`)); err != nil {
		return 0, false
	}
	return c, true
}
