package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/eventbus"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/telemetry"
)

// Interceptor is one slot of the server's interceptor chain: the unary and
// the stream interceptor of one concern, such as authentication. A slot
// always installs both, so no concern can guard unary calls and leave
// streams open. *authn.Authenticator and *authz.Authorizer are
// Interceptors; InterceptorFuncs makes one of two functions.
type Interceptor interface {
	UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error)
	StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error
}

// InterceptorFuncs makes an Interceptor of a unary and a stream
// interceptor. Both are required: New refuses a slot with either missing.
func InterceptorFuncs(unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) Interceptor {
	return interceptorFuncs{unary, stream}
}

type interceptorFuncs struct {
	unary  grpc.UnaryServerInterceptor
	stream grpc.StreamServerInterceptor
}

func (f interceptorFuncs) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return f.unary(ctx, req, info, handler)
}

func (f interceptorFuncs) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return f.stream(srv, ss, info, handler)
}

// checkSlot reports a slot that would leave calls unchecked.
func checkSlot(name string, i Interceptor) error {
	if i == nil {
		return fmt.Errorf("service.%s: the interceptor is nil", name)
	}
	if f, ok := i.(interceptorFuncs); ok && (f.unary == nil || f.stream == nil) {
		missing := "stream"
		if f.unary == nil {
			missing = "unary"
		}
		return fmt.Errorf("service.%s: the %s interceptor is nil, which would leave those calls unchecked", name, missing)
	}
	return nil
}

// Option configures New.
type Option interface{ apply(*serverOptions) }

type optionFunc func(*serverOptions)

func (f optionFunc) apply(o *serverOptions) { f(o) }

type serverOptions struct {
	tel       *telemetry.Telemetry
	global    bool
	authn     Interceptor
	authz     Interceptor
	given     [2]bool // WithAuthentication, WithAuthorization
	app       []Interceptor
	listener  net.Listener
	adminLn   net.Listener
	grpcOpts  []grpc.ServerOption
	tls       *tls.Config
	noSignals bool
}

// WithTelemetry makes the server report through t, which the caller owns
// and shuts down. Without it, New builds telemetry from the `telemetry`
// section, and shuts it down when the server stops.
func WithTelemetry(t *telemetry.Telemetry) Option {
	return optionFunc(func(o *serverOptions) { o.tel = t })
}

// WithGlobalTelemetry installs the server's telemetry as the OpenTelemetry
// globals and its logger as slog's default, once New has succeeded, so
// libraries that report through the globals join the service's pipeline.
// Without it, New changes no process-wide state.
func WithGlobalTelemetry() Option {
	return optionFunc(func(o *serverOptions) { o.global = true })
}

// WithAuthentication fills the authentication slot of the chain, which runs
// after recovery and before authorization, instead of the authn.Authenticator
// that the authn section describes. Methods whose access rule is public (and
// health checks) are admitted without credentials only if i admits them.
func WithAuthentication(i Interceptor) Option {
	return optionFunc(func(o *serverOptions) { o.authn, o.given[0] = i, true })
}

// WithAuthorization fills the authorization slot of the chain, which runs
// after authentication and before the application's interceptors, instead
// of the authz.Authorizer built from the authz section. Every method still
// needs an access rule: the server compiles them either way, to know which
// methods are public.
func WithAuthorization(i Interceptor) Option {
	return optionFunc(func(o *serverOptions) { o.authz, o.given[1] = i, true })
}

// WithInterceptors appends the application's own interceptors, which run
// last, just before the handler, in the order given.
func WithInterceptors(i ...Interceptor) Option {
	return optionFunc(func(o *serverOptions) { o.app = append(o.app, i...) })
}

// WithListener serves gRPC on ln instead of listening on
// service.listen_addr. The server closes ln.
func WithListener(ln net.Listener) Option {
	return optionFunc(func(o *serverOptions) { o.listener = ln })
}

// WithAdminListener serves the admin HTTP server on ln instead of listening
// on service.admin_addr. The server closes ln.
func WithAdminListener(ln net.Listener) Option {
	return optionFunc(func(o *serverOptions) { o.adminLn = ln })
}

// WithTLSConfig serves gRPC over TLS with c instead of the service.tls
// section, for certificates that come from code, such as a SPIFFE workload
// API source. For authn.mtls, c must verify client certificates.
func WithTLSConfig(c *tls.Config) Option {
	return optionFunc(func(o *serverOptions) { o.tls = c })
}

// WithGRPCOptions adds grpc.ServerOptions after Loam's own. Give TLS with
// the service.tls section or WithTLSConfig, not grpc.Creds here: the server
// checks that authn.mtls has TLS only through those.
func WithGRPCOptions(opts ...grpc.ServerOption) Option {
	return optionFunc(func(o *serverOptions) { o.grpcOpts = append(o.grpcOpts, opts...) })
}

// WithoutSignals stops Serve from handling SIGTERM and SIGINT; only its
// context and Shutdown stop it then. Tests and programs that own signal
// handling use it.
func WithoutSignals() Option {
	return optionFunc(func(o *serverOptions) { o.noSignals = true })
}

// Server is a gRPC server with Loam's parts wired in, its health service,
// and its admin HTTP server.
//
// The interceptor chain runs, for every unary and streaming RPC, in this
// order:
//
//  1. telemetry: a span and the RPC duration metric per call (Loam's
//     recorder, inside the chain rather than a stats handler, whose
//     plumbing in grpc-go alone allocates about twenty objects per call);
//     when telemetry records nothing, only the incoming trace context is
//     carried on;
//  2. recovery: a panic becomes codes.Internal with a generic message, the
//     stack goes to the log and the span; an error that is not a gRPC
//     status made by the handler is logged and sent as codes.Unknown with
//     a generic message;
//  3. limits: malformed requests, load shedding, the default deadline
//     (and, as server options, message sizes, streams, keepalive);
//  4. authentication (the authn section, or WithAuthentication);
//  5. rate limits, when limits.rate_limits is set;
//  6. authorization (the authz section and the methods' access rules, or
//     WithAuthorization);
//  7. the application's interceptors (WithInterceptors);
//  8. fault injection, when service.faults.enabled;
//  9. the handler.
//
// Steps 1 to 6 run in one link of grpc-go's chain when authentication and
// authorization are Loam's own. Calls of methods the server does not serve
// are counted (as _OTHER) and refused with UNIMPLEMENTED.
//
// # Access table
//
// The access rules of every registered method (their proto option, else
// authz.rules) are compiled once, when Check, Listen or Serve first runs,
// and that one table tells authentication which methods admit callers
// without credentials, authorization what to decide, and telemetry which
// methods exist and which face the public. A method without a rule, a rule
// that contradicts the proto, a CEL condition that does not type-check or
// a broken service or event option stops the server there, with the
// message.
//
// A Server is safe for concurrent use. Register services before Check,
// Listen or Serve.
type Server struct {
	cfg    Config
	o      serverOptions
	tel    *telemetry.Telemetry
	ownTel bool
	log    *slog.Logger
	health *health.Server
	creds  credentials.TransportCredentials // nil for plaintext
	tlsRel *tlsReloader                     // nil unless from service.tls
	cache  *cache.Store
	bus    *events.Bus
	admin  *admin

	mu         sync.Mutex
	registered []registration
	prepared   bool
	prepareErr error
	grpc       *grpc.Server         // built by prepare
	authn      *authn.Authenticator // built by prepare from the authn section, or nil
	authzNow   authzSlot            // the authorizer of the access table, set by prepare
	table      table                // set by prepare
	entry      *entry               // set by prepare
	rejected   *rejections          // set by prepare
	live       atomic.Pointer[live] // set by prepare, replaced by Reload
	hasRates   bool                 // the chain has the rate-limit link
	hasFaults  bool                 // the chain has the fault-injection link
	infos      map[string]grpc.ServiceInfo

	reloadMu sync.Mutex
	running  Config // the configuration in force, as Reload changed it
	reloads  metric.Int64Counter
	serving  bool
	draining bool
	stopOnce sync.Once
	stopped  chan struct{}
	stopErr  error
	onStop   []func(context.Context) error // guarded by mu
	hooksRan bool                          // Shutdown has taken onStop; guarded by mu
}

type registration struct {
	desc *grpc.ServiceDesc
	impl any
}

// New builds a server from cfg. It fails, naming every problem, when cfg is
// invalid; when a slot is given half (see Interceptor); when fault
// injection is enabled in production without allow_in_production; when
// authn.mtls has no TLS to verify client certificates; when a service.tls
// file cannot be read; or when telemetry cannot be built.
//
// New changes no process-wide state unless WithGlobalTelemetry asks it to.
func New(ctx context.Context, cfg Config, opts ...Option) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Service = cfg.Service.withDefaults()
	s := &Server{cfg: cfg, stopped: make(chan struct{})}
	for _, opt := range opts {
		opt.apply(&s.o)
	}
	var errs []error
	for i, slot := range append([]Interceptor{s.o.authn, s.o.authz}, s.o.app...) {
		if i < 2 && !s.o.given[i] {
			continue
		}
		errs = append(errs, checkSlot(s.slotName(i), slot))
	}
	if cfg.Service.AllowUnauthenticated && s.o.authn != nil {
		errs = append(errs, errors.New("service.allow_unauthenticated: contradicts WithAuthentication; remove one"))
	}
	if cfg.Authn.MTLS && s.o.tls == nil && cfg.Service.TLS.ClientCAFile == "" {
		errs = append(errs, errors.New("authn.mtls: client certificates need TLS that verifies them: set service.tls with client_ca_file, or use service.WithTLSConfig"))
	}
	if _, err := newFaults(cfg.Service.Faults, cfg.Service.environment()); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.tel = s.o.tel
	if s.tel == nil {
		tel, err := telemetry.New(ctx, cfg.Telemetry,
			telemetry.WithService(cfg.Service.Name, cfg.Service.Version, cfg.Service.environment()))
		if err != nil {
			return nil, err
		}
		s.tel, s.ownTel = tel, true
		defer func() {
			if err != nil {
				_ = tel.Shutdown(context.WithoutCancel(ctx))
			}
		}()
	}
	s.log = s.tel.Logger()
	// The SDK reports a bad instrument to the global error handler and
	// returns a no-op one: counting never stops a server.
	s.reloads, _ = s.tel.MeterProvider().Meter(meterName).Int64Counter("loam.config.reloads",
		metric.WithDescription("Configuration reloads, by result: applied, unchanged or rejected."),
		metric.WithUnit("{reload}"))
	switch {
	case s.o.tls != nil:
		s.creds = credentials.NewTLS(s.o.tls)
	case cfg.Service.TLS.enabled():
		if s.tlsRel, err = newTLSReloader(cfg.Service.TLS, s.log); err != nil {
			return nil, err
		}
		s.creds = credentials.NewTLS(s.tlsRel.config())
	}
	s.cache, err = cache.Open(ctx, cfg.cache(), cache.WithLogger(s.log),
		cache.WithMeterProvider(s.tel.MeterProvider()), cache.WithTracerProvider(s.tel.TracerProvider()))
	if err != nil {
		if s.tlsRel != nil {
			s.tlsRel.close()
		}
		return nil, err
	}
	source := cfg.Events.Source
	if source == "" {
		source = "//" + cfg.Service.Name
	}
	s.bus, err = s.openBus(ctx, source)
	if err != nil {
		s.cache.Close()
		if s.tlsRel != nil {
			s.tlsRel.close()
		}
		return nil, err
	}
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if cfg.Service.AdminAddr != "" || s.o.adminLn != nil {
		s.admin = newAdmin(s, cfg.Service.Pprof)
		if cfg.Cache.Redis.Enabled() {
			s.admin.addCheck("cache", s.cache.Check)
		}
	}
	if s.o.global {
		s.tel.SetGlobal()
	}
	return s, nil
}

func (s *Server) slotName(i int) string {
	switch i {
	case 0:
		return "WithAuthentication"
	case 1:
		return "WithAuthorization"
	}
	return "WithInterceptors"
}

// authenticates reports whether the chain has an authentication slot.
func (s *Server) authenticates() bool {
	return s.o.authn != nil || authnConfigured(s.cfg.Authn)
}

// RegisterService registers a service implementation, as the generated
// RegisterXxxServer functions call it. It satisfies grpc.ServiceRegistrar.
// Call it before Check, Listen and Serve; a later call panics, as
// grpc-go's does after Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prepared {
		panic(fmt.Sprintf("service: RegisterService(%s) after Check, Listen or Serve", desc.ServiceName))
	}
	s.registered = append(s.registered, registration{desc, impl})
}

// Check compiles the access table of the registered services and builds
// the interceptor chain on it, as Listen and Serve do first, and returns
// every problem that would stop the server from starting: a method without
// an access rule, a rule that contradicts its proto or names no method, a
// condition that does not compile, a broken service or event option, or
// methods that need a principal on a server that authenticates nobody.
// Call it in a service's own tests. It runs once; later calls return the
// first result.
func (s *Server) Check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.prepared {
		s.prepared = true
		s.prepareErr = s.prepare()
	}
	return s.prepareErr
}

// GRPC returns the underlying *grpc.Server once Check, Listen or Serve has
// built it, else nil; for what this package does not wrap. Do not call its
// Serve or Stop: use the Server's.
func (s *Server) GRPC() *grpc.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grpc
}

// openBus opens the events Bus of the events section, reporting through the
// server's telemetry, the outbox's relay included.
func (s *Server) openBus(ctx context.Context, source string) (*events.Bus, error) {
	b, err := eventbus.OpenBroker(ctx, s.cfg.Events, pgoutbox.WithLogger(s.log),
		pgoutbox.WithMeterProvider(s.tel.MeterProvider()), pgoutbox.WithTracerProvider(s.tel.TracerProvider()))
	if err != nil {
		return nil, err
	}
	opts := append(s.cfg.Events.Options(), events.WithSource(source), events.WithLogger(s.log),
		events.WithTracerProvider(s.tel.TracerProvider()), events.WithMeterProvider(s.tel.MeterProvider()),
		events.WithPropagator(s.tel.Propagator()))
	if d := s.cfg.Events.Dedup; d.Store == eventbus.DedupRedis && !d.Disabled {
		claims, err := s.cache.Claims("events")
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("service: events.dedup.store redis: %w", err)
		}
		opts = append(opts, events.WithDeduper(claimDeduper{claims}))
	}
	bus, err := events.NewBus(b, opts...)
	if err != nil {
		b.Close()
		return nil, err
	}
	return bus, nil
}

// Bus returns the events Bus that the `events` section describes, in
// memory, on NATS JetStream or on RabbitMQ, for events.NewTopic. The server closes it,
// draining its subscriptions, once calls in flight have ended.
func (s *Server) Bus() *events.Bus { return s.bus }

// Cache returns the cache Store that the `cache` section describes, for
// cache.New: in process only, or in front of Redis. The server closes it
// once it has drained.
func (s *Server) Cache() *cache.Store { return s.cache }

// Telemetry returns the telemetry the server reports through.
func (s *Server) Telemetry() *telemetry.Telemetry { return s.tel }

// Logger returns the server's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// SetServing sets the health status of one registered service, such as
// "captures.v1.CaptureService", for grpc.health.v1 and /readyz. Serve marks
// every registered service serving when it starts and not serving when it
// drains.
func (s *Server) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(service, st)
}

// OnShutdown registers f to run during Shutdown, once calls have drained
// and the bus has stopped its subscriptions' handlers, and before the
// cache closes: the place to close what handlers use, such as a database
// pool. Functions run in the reverse order of registration, each with
// Shutdown's context; their errors join Shutdown's. OnShutdown is safe for
// concurrent use. Registered once Shutdown has passed that point, f runs at
// once, in the caller's goroutine, and its error is logged: what it closes
// is never left open.
func (s *Server) OnShutdown(f func(ctx context.Context) error) {
	s.mu.Lock()
	if !s.hooksRan {
		s.onStop = append(s.onStop, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if err := f(context.Background()); err != nil {
		s.log.Error("shutdown hook registered after shutdown failed", "error", err)
	}
}

// AddReadinessCheck registers a check that /readyz runs, such as the reach
// of a database or a broker. check must return quickly; it gets a context
// with a deadline of a few seconds. The service is ready when every check
// passes and it is not draining.
func (s *Server) AddReadinessCheck(name string, check func(ctx context.Context) error) {
	if s.admin != nil {
		s.admin.addCheck(name, check)
	}
}

// Addr returns the address the gRPC server listens on, once Serve has
// started listening, or nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.o.listener == nil {
		return nil
	}
	return s.o.listener.Addr()
}

// AdminAddr returns the address of the admin HTTP server once Serve has
// started it, or nil.
func (s *Server) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.o.adminLn == nil {
		return nil
	}
	return s.o.adminLn.Addr()
}

// Listen runs Check, then opens the gRPC and admin listeners now rather
// than in Serve, so the caller learns a broken contract, the addresses and
// a port conflict before serving. It is optional and idempotent.
func (s *Server) Listen() error {
	if err := s.Check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var lc net.ListenConfig
	if s.o.listener == nil {
		ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Service.ListenAddr)
		if err != nil {
			return fmt.Errorf("service.listen_addr: %w", err)
		}
		s.o.listener = ln
	}
	if s.admin != nil && s.o.adminLn == nil {
		ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Service.AdminAddr)
		if err != nil {
			return fmt.Errorf("service.admin_addr: %w", err)
		}
		s.o.adminLn = ln
	}
	return nil
}

// Serve serves gRPC and the admin server until ctx is done, SIGTERM or
// SIGINT arrives (unless WithoutSignals), Shutdown is called, or serving
// fails. It then shuts down as Shutdown does and returns nil after a clean
// stop, or the error that stopped it. When the server cannot start (an
// address in use, a method without an access rule) Serve shuts it down and
// returns why. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		s.stopUnserved()
		return err
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("service: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	// The first SIGTERM or SIGINT drains; a second one during the drain
	// cuts it short, cancelling the calls in flight.
	var sigs chan os.Signal
	var signalled <-chan os.Signal
	if !s.o.noSignals {
		sigs = make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
		defer signal.Stop(sigs)
		signalled = sigs
	}
	for name := range s.grpc.GetServiceInfo() {
		s.SetServing(name, true)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if s.authn != nil {
		go s.warmUp(ctx, s.authn)
	}

	errc := make(chan error, 2)
	ln := s.o.listener
	if n := s.cfg.Service.Limits.MaxConnections; n > 0 {
		ln = netutil.LimitListener(ln, n)
	}
	go func() { errc <- s.grpc.Serve(ln) }()
	if s.admin != nil {
		go func() { errc <- s.admin.serve(s.o.adminLn) }()
	}
	s.log.Info("serving", "grpc", s.o.listener.Addr().String(), "admin", addrString(s.o.adminLn),
		"environment", s.cfg.Service.environment(), "reflection", s.cfg.Service.reflection())

	var serveErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "cause", context.Cause(ctx))
	case sig := <-signalled:
		s.log.Info("shutting down", "signal", sig.String())
	case <-s.stopped:
	case err := <-errc:
		// A server closed by a concurrent Shutdown is not a failure.
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) &&
			!(errors.Is(err, net.ErrClosed) && s.isDraining()) {
			serveErr = err
			s.log.Error("serving failed", "error", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx),
		s.cfg.Service.DrainDelay+s.cfg.Service.ShutdownTimeout+FlushAllowance, errors.New("shutdown took too long"))
	defer cancel()
	if signalled != nil {
		go func() {
			select {
			case sig := <-signalled:
				s.log.Warn("second signal: cutting the drain short", "signal", sig.String())
				cancel()
			case <-shutdownCtx.Done():
			}
		}()
	}
	err := s.Shutdown(shutdownCtx)
	return errors.Join(serveErr, err)
}

// FlushAllowance is how long Serve's shutdown runs past
// service.drain_delay plus service.shutdown_timeout, for the admin server
// to stop and telemetry to flush. A pod's termination grace must cover all
// three, or the orchestrator kills the process before its last spans and
// metrics leave; `loam doctor` checks that it does.
const FlushAllowance = 5 * time.Second

// ErrCallsCut is returned by Shutdown and Serve when the drain ended with
// calls still in flight, which were cancelled: the shutdown timeout ran
// out, the context ended, or a second signal arrived. A service's main
// should exit non-zero on it, so the orchestrator records an unclean stop.
var ErrCallsCut = errors.New("service: in-flight calls were cancelled to finish the drain")

// Shutdown drains the server: health turns NOT_SERVING and /readyz fails,
// the server keeps serving for service.drain_delay, then stops accepting
// RPCs and waits for in-flight ones for up to service.shutdown_timeout (or
// until ctx is done), after which the rest are cancelled. Then the admin
// server stops and telemetry owned by the server is flushed; a failed
// flush (a collector out of reach) is logged, not returned.
//
// Shutdown is idempotent and safe to call concurrently: every call waits
// for the one drain and returns its result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		defer close(s.stopped)
		s.mu.Lock()
		s.draining = true
		s.mu.Unlock()
		s.health.Shutdown()
		if d := s.cfg.Service.DrainDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		var errs []error
		if g := s.GRPC(); g != nil && !s.drain(ctx, g) {
			errs = append(errs, ErrCallsCut)
		}
		// Handlers have ended, so nothing publishes any more; the bus
		// drains its subscriptions' handlers, bounded by ctx.
		if err := s.bus.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("events: %w", err))
		}
		// Nothing of the service runs any more: release what it holds.
		s.mu.Lock()
		hooks := s.onStop
		s.onStop, s.hooksRan = nil, true
		s.mu.Unlock()
		for _, f := range slices.Backward(hooks) {
			if err := f(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if s.admin != nil {
			if err := s.admin.shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("admin server: %w", err))
			}
		}
		s.closeListeners() // those of a server that never served
		if s.tlsRel != nil {
			s.tlsRel.close()
		}
		if err := s.cache.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cache: %w", err))
		}
		s.stopErr = errors.Join(errs...)
		s.log.Info("stopped")
		// Flushing telemetry comes last and only logs a failure: a collector
		// that cannot be reached is no failure of the service's drain.
		if s.ownTel {
			if err := s.tel.Shutdown(ctx); err != nil {
				s.log.Error("telemetry not flushed", "error", err)
			}
		}
	})
	<-s.stopped
	return s.stopErr
}

// drain stops g gracefully, cancelling the RPCs still in flight when
// service.shutdown_timeout runs out or ctx ends. It reports whether every
// call finished on its own.
func (s *Server) drain(ctx context.Context, g *grpc.Server) bool {
	drained := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(drained)
	}()
	timer := time.NewTimer(s.cfg.Service.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-drained:
		return true
	case <-timer.C:
		s.log.Warn("shutdown timeout: cancelling in-flight RPCs", "timeout", s.cfg.Service.ShutdownTimeout)
	case <-ctx.Done():
		s.log.Warn("shutdown cut short: cancelling in-flight RPCs", "cause", context.Cause(ctx))
	}
	g.Stop()
	<-drained
	return false
}

// stopUnserved releases what a server that failed to start holds: its
// listeners and the telemetry it owns.
func (s *Server) stopUnserved() {
	_ = s.Shutdown(context.Background())
}

// closeListeners closes the listeners, which grpc-go closes only once it
// serves on them; closing one twice is harmless.
func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range []net.Listener{s.o.listener, s.o.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func addrString(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}
