package bench

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	grpcauthz "google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/loamtest"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// Stack is one server under test, listening on loopback.
type Stack struct {
	Name  string
	Addr  string
	Token string // the bearer token its clients send, or ""
	Stop  func()
}

// testService answers UnaryCall with a payload of the size asked for, and
// StreamingOutputCall with one such message per response parameter.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, in.GetResponseSize())}}, nil
}

func (testService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range in.GetResponseParameters() {
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

// Env is what the stacks share: the issuer of their tokens.
type Env struct {
	Issuer *loamtest.Issuer
}

// NewEnv starts the issuer.
func NewEnv() (*Env, error) {
	iss, err := loamtest.StartIssuer(audience)
	if err != nil {
		return nil, err
	}
	return &Env{Issuer: iss}, nil
}

// Close stops the issuer.
func (e *Env) Close() { e.Issuer.Close() }

const (
	audience   = "bench-api"
	role       = "caller"
	permission = "bench.call"
)

// token is a token of the caller role.
func (e *Env) token() (string, error) { return e.Issuer.Mint("bench-user", loamtest.Roles(role)) }

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// Bare is grpc-go with nothing added.
func (e *Env) Bare() (*Stack, error) {
	ln, err := listen()
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, testService{})
	go s.Serve(ln)
	return &Stack{Name: "bare grpc-go", Addr: ln.Addr().String(), Stop: s.Stop}, nil
}

// telemetryConfig exports sampled spans at ratio through a batch processor
// (to a discarding stdout exporter) and keeps metrics for Prometheus.
func telemetryConfig(ratio float64) telemetry.Config {
	return telemetry.Config{
		Traces:        telemetry.Export{Exporter: telemetry.ExporterStdout},
		SamplingRatio: &ratio,
		Prometheus:    true,
	}
}

func newTelemetry(ratio float64) (*telemetry.Telemetry, error) {
	return telemetry.New(context.Background(), telemetryConfig(ratio), telemetry.WithStdout(io.Discard), telemetry.WithLogOutput(io.Discard))
}

// Loam is the full Loam stack: recovery, telemetry at ratio with
// Prometheus metrics, limits, authentication of a cached token against the
// issuer, and authorization by a permission rule, with a CEL condition
// when condition is set.
func (e *Env) Loam(ratio float64, condition bool) (*Stack, error) {
	tok, err := e.token()
	if err != nil {
		return nil, err
	}
	rule := authz.Rule{Permission: permission}
	name := "Loam full, permission"
	if condition {
		rule.Condition = "request.response_size <= 1048576"
		name = "Loam full, permission + CEL"
	}
	cfg := service.Config{
		Service: service.Settings{Name: "bench", Environment: "bench", ListenAddr: "127.0.0.1:0"},
		Authn:   e.Issuer.AuthnConfig(),
		Authz: authz.Config{
			Roles: map[string][]string{role: {permission}},
			Rules: map[string]authz.Rule{
				testpb.TestService_UnaryCall_FullMethodName:           rule,
				testpb.TestService_StreamingOutputCall_FullMethodName: {Permission: permission},
				"/grpc.testing.TestService/*":                         {Authenticated: true},
			},
		},
	}
	tel, err := newTelemetry(ratio)
	if err != nil {
		return nil, err
	}
	srv, err := service.New(context.Background(), cfg, service.WithTelemetry(tel), service.WithoutSignals())
	if err != nil {
		return nil, err
	}
	testpb.RegisterTestServiceServer(srv, testService{})
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	go srv.Serve(context.Background())
	return &Stack{Name: name + ", " + percent(ratio) + " sampled", Addr: srv.Addr().String(), Token: tok, Stop: func() {
		srv.Shutdown(context.Background())
		tel.Shutdown(context.Background())
	}}, nil
}

// peerPolicy is grpc-go's authz policy closest to the rule "role caller
// holds bench.call": its policies match paths and headers, not token
// roles, so the authentication function passes the roles on as a header.
const peerPolicy = `{
  "name": "bench",
  "allow_rules": [{
    "name": "callers",
    "request": {
      "paths": ["/grpc.testing.TestService/*"],
      "headers": [{"key": "x-roles", "values": ["caller"]}]
    }
  }]
}`

// Peer is the stack a team assembles by hand: go-grpc-middleware's
// recovery and auth interceptors, go-oidc verifying the token on every
// call (its key set cached), otelgrpc's stats handler on the same kind of
// providers at ratio, and grpc-go's authz interceptor.
func (e *Env) Peer(ratio float64) (*Stack, error) {
	tok, err := e.token()
	if err != nil {
		return nil, err
	}
	provider, err := oidc.NewProvider(context.Background(), e.Issuer.URL())
	if err != nil {
		return nil, err
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: audience})
	authFunc := func(ctx context.Context) (context.Context, error) {
		raw, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, err
		}
		idt, err := verifier.Verify(ctx, raw)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, "authentication required")
		}
		var claims struct {
			Roles []string `json:"roles"`
		}
		if err := idt.Claims(&claims); err != nil {
			return nil, status.Error(codes.Unauthenticated, "authentication required")
		}
		md, _ := metadata.FromIncomingContext(ctx)
		md = md.Copy()
		md.Set("x-roles", strings.Join(claims.Roles, ","))
		return metadata.NewIncomingContext(ctx, md), nil
	}
	az, err := grpcauthz.NewStatic(peerPolicy)
	if err != nil {
		return nil, err
	}
	tel, err := newTelemetry(ratio)
	if err != nil {
		return nil, err
	}
	ln, err := listen()
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tel.TracerProvider()),
			otelgrpc.WithMeterProvider(tel.MeterProvider()), otelgrpc.WithPropagators(tel.Propagator()))),
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(), auth.UnaryServerInterceptor(authFunc), az.UnaryInterceptor),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(), auth.StreamServerInterceptor(authFunc), az.StreamInterceptor),
	)
	testpb.RegisterTestServiceServer(s, testService{})
	go s.Serve(ln)
	return &Stack{Name: "go-grpc-middleware + go-oidc + otelgrpc + grpc authz, " + percent(ratio) + " sampled", Addr: ln.Addr().String(), Token: tok, Stop: func() {
		s.Stop()
		tel.Shutdown(context.Background())
	}}, nil
}

func percent(r float64) string { return strconv.FormatFloat(r*100, 'g', -1, 64) + "%" }

// Stacks starts every stack of the comparison, the baseline first: bare
// grpc-go; Loam at 1% and 100% sampling with a permission rule, and at 1%
// with a permission and a CEL condition; the peer stack at 1%.
func (e *Env) Stacks() ([]*Stack, error) {
	var out []*Stack
	for _, start := range []func() (*Stack, error){
		e.Bare,
		func() (*Stack, error) { return e.Loam(0.01, false) },
		func() (*Stack, error) { return e.Loam(1, false) },
		func() (*Stack, error) { return e.Loam(0.01, true) },
		func() (*Stack, error) { return e.Peer(0.01) },
	} {
		st, err := start()
		if err != nil {
			for _, s := range out {
				s.Stop()
			}
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
