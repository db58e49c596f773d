package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/proto/loam/options"
	"github.com/loamhq/loam/telemetry"
)

// Interceptors fills one slot of the server's interceptor chain. Either
// field may be nil.
type Interceptors struct {
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
}

// Option configures New.
type Option interface{ apply(*serverOptions) }

type optionFunc func(*serverOptions)

func (f optionFunc) apply(o *serverOptions) { f(o) }

type serverOptions struct {
	tel       *telemetry.Telemetry
	authn     Interceptors
	authz     Interceptors
	app       []Interceptors
	listener  net.Listener
	adminLn   net.Listener
	grpcOpts  []grpc.ServerOption
	noSignals bool
}

// WithTelemetry makes the server report through t, which the caller owns
// and shuts down. Without it, New builds telemetry from the `telemetry`
// section, installs it as the OpenTelemetry globals, and shuts it down when
// the server stops.
func WithTelemetry(t *telemetry.Telemetry) Option {
	return optionFunc(func(o *serverOptions) { o.tel = t })
}

// WithAuthentication fills the authentication slot of the chain, which runs
// after recovery and before authorization. Without it, the slot holds an
// authn.Authenticator built from the authn section when that section names
// an issuer or turns on mtls, and stays empty otherwise.
func WithAuthentication(i Interceptors) Option {
	return optionFunc(func(o *serverOptions) { o.authn = i })
}

// WithAuthorization fills the authorization slot of the chain, which runs
// after authentication and before the application's interceptors. Without
// it, the slot holds an authz.Authorizer built by Serve from the authz
// section and the registered services whenever authentication is
// configured or the section names roles or rules: then every method needs
// a rule, and Serve refuses to start, listing the methods without one.
func WithAuthorization(i Interceptors) Option {
	return optionFunc(func(o *serverOptions) { o.authz = i })
}

// WithInterceptors appends the application's own interceptors, which run
// last, just before the handler, in the order given.
func WithInterceptors(i ...Interceptors) Option {
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

// WithGRPCOptions adds grpc.ServerOptions, such as TLS credentials, after
// Loam's own.
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
//  1. recovery: a panic becomes codes.Internal with a generic message, the
//     stack goes to the log and the span; an error that is not a gRPC
//     status is logged and sent as codes.Unknown with a generic message;
//  2. telemetry, as a stats handler around the whole chain: a span and the
//     RPC duration metric per call (when telemetry records nothing, an
//     interceptor that only passes incoming trace context on);
//  3. limits, as server options: message sizes, concurrent streams,
//     keepalive enforcement;
//  4. authentication (WithAuthentication);
//  5. authorization (WithAuthorization);
//  6. the application's interceptors (WithInterceptors);
//  7. fault injection, when service.faults.enabled;
//  8. the handler.
//
// A Server is safe for concurrent use. Register services before Serve.
type Server struct {
	cfg    Config
	o      serverOptions
	grpc   *grpc.Server
	health *health.Server
	tel    *telemetry.Telemetry
	ownTel bool
	log    *slog.Logger
	authn  *authn.Authenticator // nil unless built from the authn section
	authz  *lazyAuthorizer      // nil unless built from the authz section
	admin  *admin

	mu       sync.Mutex
	serving  bool
	draining bool
	stopOnce sync.Once
	stopped  chan struct{}
	stopErr  error
}

// New builds a server from cfg. It fails, naming every problem, when cfg is
// invalid, when fault injection is enabled in production without
// allow_in_production, or when telemetry cannot be built.
func New(ctx context.Context, cfg Config, opts ...Option) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Service = cfg.Service.withDefaults()
	s := &Server{cfg: cfg, stopped: make(chan struct{})}
	for _, opt := range opts {
		opt.apply(&s.o)
	}
	s.tel = s.o.tel
	if s.tel == nil {
		tel, err := telemetry.Setup(ctx, cfg.Telemetry,
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
	if s.o.authn.Unary == nil && s.o.authn.Stream == nil && authnConfigured(cfg.Authn) {
		a, err := s.newAuthenticator()
		if err != nil {
			return nil, err
		}
		s.authn = a
		s.o.authn = Interceptors{Unary: a.UnaryInterceptor, Stream: a.StreamInterceptor}
	}
	if s.o.authz.Unary == nil && s.o.authz.Stream == nil {
		if authzConfigured(cfg) {
			s.authz = &lazyAuthorizer{}
			s.o.authz = Interceptors{Unary: s.authz.unary, Stream: s.authz.stream}
		} else {
			s.log.Warn("no authentication or authorization configured: every method is open to every caller")
		}
	}

	lim := cfg.Service.Limits
	public := func(fullMethod string) bool {
		if cfg.Service.PublicEndpoint {
			return true
		}
		return methodIsPublic(fullMethod)
	}
	faults, err := newFaults(cfg.Service.Faults, cfg.Service.environment())
	if err != nil {
		return nil, err
	}
	var gopts []grpc.ServerOption
	var passThrough Interceptors
	if s.tel.Recording() {
		gopts = append(gopts, grpc.StatsHandler(s.tel.ServerHandler(telemetry.PublicEndpoint(public))))
	} else {
		passThrough.Unary, passThrough.Stream = s.tel.ServerPassThrough()
	}
	unary, stream := chain(s.log, passThrough, s.o, faults)
	gopts = append(gopts,
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(lim.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(lim.MaxSendMsgBytes),
		grpc.MaxConcurrentStreams(lim.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             lim.KeepaliveMinTime,
			PermitWithoutStream: lim.KeepalivePermitWithoutStream,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:  lim.MaxConnectionAge,
			MaxConnectionIdle: lim.MaxConnectionIdle,
		}),
	)
	s.grpc = grpc.NewServer(append(gopts, s.o.grpcOpts...)...)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if cfg.Service.reflection() {
		reflection.Register(s.grpc)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if cfg.Service.AdminAddr != "" || s.o.adminLn != nil {
		s.admin = newAdmin(s, cfg.Service.Pprof)
	}
	return s, nil
}

// RegisterService registers a service implementation, as the generated
// RegisterXxxServer functions call it. It satisfies grpc.ServiceRegistrar.
// Call it before Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// GRPC returns the underlying *grpc.Server, for what this package does not
// wrap. Do not call its Serve or Stop: use the Server's.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

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

// Listen opens the gRPC and admin listeners now rather than in Serve, so
// the caller learns the addresses (and a port conflict) before serving. It
// is optional and idempotent.
func (s *Server) Listen() error {
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
	if s.authz != nil {
		if err := s.buildAuthorizer(); err != nil {
			s.stopUnserved()
			return err
		}
	}

	if !s.o.noSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
		defer stop()
	}
	for name := range s.grpc.GetServiceInfo() {
		s.SetServing(name, true)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if s.authn != nil {
		go s.warmUp(ctx, s.authn)
	}

	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.o.listener) }()
	if s.admin != nil {
		go func() { errc <- s.admin.serve(s.o.adminLn) }()
	}
	s.log.Info("serving", "grpc", s.o.listener.Addr().String(), "admin", addrString(s.o.adminLn),
		"environment", s.cfg.Service.environment(), "reflection", s.cfg.Service.reflection())

	var serveErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "cause", context.Cause(ctx))
	case <-s.stopped:
	case err := <-errc:
		// A server closed by a concurrent Shutdown is not a failure.
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) &&
			!(errors.Is(err, net.ErrClosed) && s.isDraining()) {
			serveErr = err
			s.log.Error("serving failed", "error", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Service.DrainDelay+s.cfg.Service.ShutdownTimeout+5*time.Second)
	defer cancel()
	err := s.Shutdown(shutdownCtx)
	return errors.Join(serveErr, err)
}

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
		drained := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(drained)
		}()
		timer := time.NewTimer(s.cfg.Service.ShutdownTimeout)
		defer timer.Stop()
		select {
		case <-drained:
		case <-timer.C:
			s.log.Warn("shutdown timeout: cancelling in-flight RPCs", "timeout", s.cfg.Service.ShutdownTimeout)
			s.grpc.Stop()
		case <-ctx.Done():
			s.log.Warn("shutdown cut short: cancelling in-flight RPCs", "cause", context.Cause(ctx))
			s.grpc.Stop()
		}
		<-drained
		var errs []error
		if s.admin != nil {
			if err := s.admin.shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("admin server: %w", err))
			}
		}
		s.closeListeners() // those of a server that never served
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

// methodIsPublic reports whether the method's loam.options.v1.access rule
// is public.
func methodIsPublic(fullMethod string) bool {
	md, ok := options.FindMethod(fullMethod)
	if !ok {
		return false
	}
	rule, err := options.Access(md)
	return err == nil && rule.GetPublic()
}
