package service

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/proto/loam/options"
	"github.com/loamhq/loam/telemetry"
)

// authnConfigured reports whether the authn section asks for
// authentication: a trusted issuer or client certificates.
func authnConfigured(c authn.Config) bool { return len(c.Issuers) > 0 || c.MTLS }

// prepare compiles the access table of the registered services and builds
// the gRPC server on it. It runs once, under s.mu.
func (s *Server) prepare() error {
	regs := slices.Clone(s.registered)
	regs = append(regs, registration{&healthpb.Health_ServiceDesc, s.health})
	if s.cfg.Service.reflection() {
		// Reflection answers from the server it is registered on, which
		// exists only below; the descriptors are all the table needs.
		regs = append(regs,
			registration{&reflectionpb.ServerReflection_ServiceDesc, nil},
			registration{&reflectionv1alpha.ServerReflection_ServiceDesc, nil})
	}
	infos := make(map[string]grpc.ServiceInfo, len(regs))
	for _, r := range regs {
		infos[r.desc.ServiceName] = serviceInfo(r.desc)
	}
	var errs []error
	if err := checkContracts(infos); err != nil {
		errs = append(errs, err)
	}
	az, err := authz.New(s.cfg.Authz, infos, authz.WithLogger(s.log), authz.WithMeterProvider(s.tel.MeterProvider()))
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	public := az.PublicMethods()
	if !s.authenticates() && !s.cfg.Service.AllowUnauthenticated {
		if closed := slices.DeleteFunc(az.Methods(), func(m string) bool { return slices.Contains(public, m) }); len(closed) > 0 {
			return fmt.Errorf("no authentication is configured, yet these methods need a principal: %s: set authn.issuers or authn.mtls (or, in development, service.allow_unauthenticated: true)",
				strings.Join(closed, ", "))
		}
	}

	var authnSlot, authzSlot Interceptor
	switch {
	case s.cfg.Service.AllowUnauthenticated:
		s.log.Warn("service.allow_unauthenticated: every method is open to every caller, and no access rule is enforced")
	default:
		authnSlot, authzSlot = s.o.authn, s.o.authz
		if authnSlot == nil && authnConfigured(s.cfg.Authn) {
			a, err := authn.New(s.cfg.Authn,
				authn.WithLogger(s.log),
				authn.WithMeterProvider(s.tel.MeterProvider()),
				authn.WithPublicMethods(public...))
			if err != nil {
				return err
			}
			s.authn, authnSlot = a, a
			if s.admin != nil && len(s.cfg.Authn.Issuers) > 0 {
				s.admin.addCheck("authn", a.Check)
			}
		}
		if authzSlot == nil {
			authzSlot = &s.authzNow
		}
	}
	s.authzNow.Store(az)
	s.table = tableOf(az)
	s.infos = infos
	s.running = s.cfg

	hopts := []telemetry.HandlerOption{telemetry.Methods(s.table.methods...)}
	if !s.cfg.Service.PublicEndpoint {
		hopts = append(hopts, telemetry.PublicEndpoint(func(m string) bool { return s.table.public[m] }))
	} else {
		hopts = append(hopts, telemetry.PublicEndpoint(nil))
	}
	var gopts []grpc.ServerOption
	s.rejected = newRejections(s.tel.MeterProvider(), s.table.methods)
	s.live.Store(s.liveState(s.cfg.Service))
	s.hasRates = len(s.cfg.Service.Limits.RateLimits) > 0
	s.hasFaults = s.cfg.Service.Faults.Enabled
	s.entry = &entry{
		log: s.log, live: &s.live, codec: newRequestCodec(), rejected: s.rejected,
		rec: s.tel.ServerRecorder(hopts...), known: s.table.known,
	}
	unary := []grpc.UnaryServerInterceptor{s.entry.unary}
	stream := []grpc.StreamServerInterceptor{s.entry.stream}
	add := func(slots ...Interceptor) {
		for _, slot := range slots {
			if slot != nil {
				unary = append(unary, slot.UnaryInterceptor)
				stream = append(stream, slot.StreamInterceptor)
			}
		}
	}
	// Rate limits and fault injection cost their work only when
	// configured at start; a reload can change them but not add them.
	var rates Interceptor
	if s.hasRates {
		l := limiter{&s.live}
		rates = InterceptorFuncs(l.unary, l.stream)
	}
	if a, ok := authnSlot.(*authn.Authenticator); (ok || authnSlot == nil) && (authzSlot == &s.authzNow || authzSlot == nil) {
		// Loam's own authentication and authorization run inside the
		// entry link, called directly: every link of grpc-go's chain
		// allocates a closure per call.
		s.entry.authn, s.entry.rates = a, s.hasRates
		if authzSlot != nil {
			s.entry.authz = &s.authzNow
		}
	} else {
		add(authnSlot, rates, authzSlot)
	}
	add(s.o.app...)
	if s.hasFaults {
		f := faultSlot{&s.live}
		add(InterceptorFuncs(f.unary, f.stream))
	}
	lim := s.cfg.Service.Limits
	gopts = append(gopts,
		grpc.ForceServerCodecV2(s.entry.codec),
		// Calls of methods the server does not serve reach the entry
		// link too, so they are counted (as _OTHER) before being refused.
		grpc.UnknownServiceHandler(unknownMethod),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(lim.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(lim.MaxSendMsgBytes),
		grpc.MaxHeaderListSize(lim.MaxHeaderListBytes),
		grpc.MaxConcurrentStreams(lim.MaxConcurrentStreams),
		grpc.ConnectionTimeout(lim.HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             lim.KeepaliveMinTime,
			PermitWithoutStream: lim.KeepalivePermitWithoutStream,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:                  lim.KeepaliveTime,
			Timeout:               lim.KeepaliveTimeout,
			MaxConnectionAge:      lim.MaxConnectionAge,
			MaxConnectionAgeGrace: lim.MaxConnectionAgeGrace,
			MaxConnectionIdle:     lim.MaxConnectionIdle,
		}),
	)
	if s.creds != nil {
		gopts = append(gopts, grpc.Creds(s.creds))
	}
	g := grpc.NewServer(append(gopts, s.o.grpcOpts...)...)
	for _, r := range regs {
		if r.desc.ServiceName == reflectionpb.ServerReflection_ServiceDesc.ServiceName {
			reflection.Register(g) // both versions
			continue
		}
		if r.desc.ServiceName != reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName {
			g.RegisterService(r.desc, r.impl)
		}
	}
	s.grpc = g
	return nil
}

// table is what the server knows of its methods from the access table.
type table struct {
	methods []string
	public  map[string]bool
	known   map[string]bool
}

func tableOf(az *authz.Authorizer) table {
	t := table{methods: az.Methods(), public: map[string]bool{}, known: map[string]bool{}}
	for _, m := range az.PublicMethods() {
		t.public[m] = true
	}
	for _, m := range t.methods {
		t.known[m] = true
	}
	return t
}

// unknownMethod answers the calls of methods the server does not serve,
// as grpc-go would.
func unknownMethod(any, grpc.ServerStream) error {
	return status.Error(codes.Unimplemented, "unknown method")
}

// liveState compiles what a reload may change.
func (s *Server) liveState(st Settings) *live {
	l := &live{
		maxCalls:    int64(st.Limits.MaxConcurrentCalls),
		callTimeout: st.Limits.DefaultCallTimeout,
		rates:       newRateLimits(st.Limits.RateLimits, s.table.methods, s.rejected),
	}
	l.faults, _ = newFaults(st.Faults, st.environment()) // New checked it
	return l
}

// authzSlot is the authorization slot of the chain, whose Authorizer a
// reload may replace.
type authzSlot struct {
	atomic.Pointer[authz.Authorizer]
}

func (a *authzSlot) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return a.Load().UnaryInterceptor(ctx, req, info, handler)
}

func (a *authzSlot) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return a.Load().StreamInterceptor(srv, ss, info, handler)
}

// serviceInfo is what (*grpc.Server).GetServiceInfo reports for desc.
func serviceInfo(desc *grpc.ServiceDesc) grpc.ServiceInfo {
	info := grpc.ServiceInfo{Metadata: desc.Metadata}
	for _, m := range desc.Methods {
		info.Methods = append(info.Methods, grpc.MethodInfo{Name: m.MethodName})
	}
	for _, st := range desc.Streams {
		info.Methods = append(info.Methods, grpc.MethodInfo{Name: st.StreamName, IsClientStream: st.ClientStreams, IsServerStream: st.ServerStreams})
	}
	return info
}

// checkContracts checks the service and event options of the files that
// declare the registered services; access rules are authz's to check.
func checkContracts(infos map[string]grpc.ServiceInfo) error {
	var errs []error
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(infos)) {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue // a hand-written ServiceDesc; its rules come from config
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		if _, err := options.Service(sd); err != nil && !errors.Is(err, options.ErrNotDeclared) {
			errs = append(errs, err)
		}
		f := sd.ParentFile()
		if seen[f.Path()] {
			continue
		}
		seen[f.Path()] = true
		errs = append(errs, checkEvents(f.Messages())...)
	}
	return errors.Join(errs...)
}

func checkEvents(msgs protoreflect.MessageDescriptors) []error {
	var errs []error
	for i := range msgs.Len() {
		m := msgs.Get(i)
		if _, err := options.Event(m); err != nil && !errors.Is(err, options.ErrNotDeclared) {
			errs = append(errs, err)
		}
		errs = append(errs, checkEvents(m.Messages())...)
	}
	return errs
}

// warmUp fetches the issuers' discovery documents and keys in the
// background, so the first calls do not wait for them. A failure is only
// logged: the authenticator retries on demand, and keys it has keep
// working.
func (s *Server) warmUp(ctx context.Context, a *authn.Authenticator) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.Ready(ctx); err != nil {
		s.log.Warn("identity provider not reachable yet; tokens will be checked once it is", "error", err)
	}
}

// Authorizer returns the server's authorizer once Check, Listen or Serve
// has built it from the authz section and the registered services, or nil.
// Use it to replace the role policy at run time (SetPolicy), for example
// from config.Watch, and to explain decisions in tests (Explain).
func (s *Server) Authorizer() *authz.Authorizer {
	return s.authzNow.Load()
}
