package service_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/internal/devissuer"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

// echoProto declares loam.e2e.v1.Echo with one public and one
// authenticated method, as a team's contract would.
const echoProto = `
name: "loam/e2e/v1/echo.proto"
package: "loam.e2e.v1"
syntax: "proto3"
dependency: ["loam/options/v1/options.proto", "google/protobuf/wrappers.proto"]
service {
  name: "Echo"
  method {
    name: "Public" input_type: ".google.protobuf.StringValue" output_type: ".google.protobuf.StringValue"
    options { [loam.options.v1.access] { public: true } }
  }
  method {
    name: "Private" input_type: ".google.protobuf.StringValue" output_type: ".google.protobuf.StringValue"
    options { [loam.options.v1.access] { authenticated: true } }
  }
}`

var registerEcho = registerProto(echoProto)

// registerProto returns a function that registers the file descriptor in
// text format once in protoregistry.GlobalFiles, as generated code would.
func registerProto(text string) func() error {
	return sync.OnceValue(func() error {
		fdp := new(descriptorpb.FileDescriptorProto)
		if err := prototext.Unmarshal([]byte(text), fdp); err != nil {
			return err
		}
		fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
		if err != nil {
			return err
		}
		return protoregistry.GlobalFiles.RegisterFile(fd)
	})
}

// echoDesc serves loam.e2e.v1.Echo: both methods answer with the caller's
// subject, or "anonymous".
var echoDesc = grpc.ServiceDesc{
	ServiceName: "loam.e2e.v1.Echo",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{echoMethod("Public"), echoMethod("Private")},
}

func echoMethod(name string) grpc.MethodDesc {
	full := "/loam.e2e.v1.Echo/" + name
	return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
		req := new(wrapperspb.StringValue)
		if err := dec(req); err != nil {
			return nil, err
		}
		handle := func(ctx context.Context, _ any) (any, error) {
			if p, ok := authn.FromContext(ctx); ok {
				return wrapperspb.String(p.Subject()), nil
			}
			return wrapperspb.String("anonymous"), nil
		}
		return in(ctx, req, &grpc.UnaryServerInfo{FullMethod: full}, handle)
	}}
}

type echoService struct{}

func (echoService) Register(r grpc.ServiceRegistrar) { r.RegisterService(&echoDesc, nil) }

func callEcho(ctx context.Context, conn *grpc.ClientConn, method string) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/loam.e2e.v1.Echo/"+method, wrapperspb.String(""), out)
	return out.GetValue(), err
}

// TestAuthenticationEndToEnd runs a server whose authn section trusts a
// local issuer, and a client that gets its token from that issuer with the
// client credentials grant.
func TestAuthenticationEndToEnd(t *testing.T) {
	if err := registerEcho(); err != nil {
		t.Fatal(err)
	}
	issuer, err := devissuer.Start("echo-api", devissuer.Client{ID: "worker", Secret: "worker-secret", Roles: []string{"reader"}})
	if err != nil {
		t.Fatal(err)
	}
	defer issuer.Close()

	cfg := testConfig()
	cfg.Authn = authn.Config{
		Issuers:                []authn.IssuerConfig{{URL: issuer.URL, Audiences: []string{"echo-api"}}},
		Leeway:                 30 * time.Second,
		RequireAccessTokenType: true,
	}
	// The stub service has no .proto, so its rules come from config.
	cfg.Authz = authz.Config{Rules: map[string]authz.Rule{
		stubserver.UnaryMethod:  {Authenticated: true},
		stubserver.StreamMethod: {Authenticated: true},
	}}
	r := start(t, cfg, registrars{&stubserver.Stub{Unary: echo}, echoService{}})

	creds, err := authn.NewClientCredentials(authn.ClientCredentialsConfig{
		TokenURL: issuer.URL + "/token", ClientID: "worker", ClientSecret: config.NewSecret("worker-secret"),
	}, authn.WithoutTransportSecurity())
	if err != nil {
		t.Fatal(err)
	}
	withToken, err := service.Dial(t.Context(), r.srv.Addr().String(), service.WithPerRPCCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer withToken.Close()

	t.Run("token from client credentials is accepted", func(t *testing.T) {
		got, err := callEcho(t.Context(), withToken, "Private")
		if err != nil || got != "service-account-worker" {
			t.Errorf("Private with a token = %q, %v; want the worker's subject", got, err)
		}
	})
	t.Run("no token on an authenticated method", func(t *testing.T) {
		_, err := callEcho(t.Context(), r.conn, "Private")
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("Private without a token = %v, want Unauthenticated", err)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		forged, _ := issuer.Mint("mallory", nil, time.Hour)
		forged = forged[:len(forged)-4] + "AAAA"
		ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+forged)
		_, err := callEcho(ctx, r.conn, "Private")
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "authentication required" {
			t.Errorf("Private with a forged token = %v, want Unauthenticated with a generic message", err)
		}
		if !strings.Contains(r.logs.String(), `"reason":"signature"`) {
			t.Errorf("log does not record the signature failure:\n%s", r.logs.String())
		}
	})
	t.Run("public method needs no token", func(t *testing.T) {
		got, err := callEcho(t.Context(), r.conn, "Public")
		if err != nil || got != "anonymous" {
			t.Errorf("Public without a token = %q, %v; want anonymous", got, err)
		}
	})
	t.Run("health checks need no token", func(t *testing.T) {
		if _, err := healthpb.NewHealthClient(r.conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health Check without a token = %v", err)
		}
	})
	t.Run("undescribed method needs a token", func(t *testing.T) {
		if _, err := stubserver.Unary(t.Context(), r.conn, "x"); status.Code(err) != codes.Unauthenticated {
			t.Errorf("stub Unary without a token = %v, want Unauthenticated", err)
		}
	})
}

// TestAuthorizationRefusesUnannotatedMethods checks that a server does not
// start while a method has no rule, and that Check, which a service's own
// test calls, names every such method before anything listens.
func TestAuthorizationRefusesUnannotatedMethods(t *testing.T) {
	cfg := testConfig()
	cfg.Authz = authz.Config{Roles: map[string][]string{"reader": {"stubs.read"}}}
	srv, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t)), service.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	(&stubserver.Stub{}).Register(srv)
	checkErr := srv.Check()
	if checkErr == nil {
		t.Fatal("Check() with unannotated methods = nil, want a refusal")
	}
	for _, m := range []string{stubserver.UnaryMethod, stubserver.StreamMethod} {
		if !strings.Contains(checkErr.Error(), m) {
			t.Errorf("Check() = %v, want it to name %s", checkErr, m)
		}
	}
	if err := srv.Listen(); err == nil || err.Error() != checkErr.Error() {
		t.Errorf("Listen() = %v, want Check's error", err)
	}
	if err := srv.Serve(t.Context()); err == nil || err.Error() != checkErr.Error() {
		t.Errorf("Serve() = %v, want Check's error", err)
	}
	if srv.Addr() != nil || srv.AdminAddr() != nil {
		t.Errorf("a refused server listens on %v and %v", srv.Addr(), srv.AdminAddr())
	}
}

// TestAuthorizationPolicy serves with config rules and a role policy, and
// replaces the policy while serving.
func TestAuthorizationPolicy(t *testing.T) {
	cfg := testConfig()
	cfg.Authz = authz.Config{
		Roles: map[string][]string{"reader": {"stubs.read"}},
		Rules: map[string]authz.Rule{stubserver.UnaryMethod: {Permission: "stubs.read"}, stubserver.StreamMethod: {Public: true}},
	}
	// Authentication comes from a test interceptor that trusts a header.
	trustHeader := service.InterceptorFuncs(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if roles := metadata.ValueFromIncomingContext(ctx, "x-roles"); len(roles) > 0 {
			ctx = authn.NewContext(ctx, authn.NewPrincipal(authn.Identity{Subject: "tester", Roles: roles}))
		}
		return h(ctx, req)
	}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return status.Error(codes.Unauthenticated, "this test authenticates unary calls only")
	})
	r := start(t, cfg, &stubserver.Stub{Unary: echo}, service.WithAuthentication(trustHeader))
	call := func(role string) codes.Code {
		ctx := t.Context()
		if role != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-roles", role)
		}
		_, err := stubserver.Unary(ctx, r.conn, "x")
		return status.Code(err)
	}
	if got := call("reader"); got != codes.OK {
		t.Errorf("reader = %v, want OK", got)
	}
	if got := call("writer"); got != codes.PermissionDenied {
		t.Errorf("writer = %v, want PermissionDenied", got)
	}
	if got := call(""); got != codes.Unauthenticated {
		t.Errorf("no principal = %v, want Unauthenticated", got)
	}
	if err := r.srv.Authorizer().SetPolicy(map[string][]string{"writer": {"stubs.*"}}); err != nil {
		t.Fatalf("SetPolicy() = %v", err)
	}
	if got := call("writer"); got != codes.OK {
		t.Errorf("writer after the policy change = %v, want OK", got)
	}
	if err := r.srv.Authorizer().SetPolicy(map[string][]string{"writer": {"Stubs.*"}}); err == nil {
		t.Error("SetPolicy(malformed) = nil, want an error")
	}
	if got := call("writer"); got != codes.OK {
		t.Errorf("writer after a rejected policy = %v, want OK: the last good policy stays", got)
	}
}
