package loamtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/loamtest"
	"github.com/loamhq/loam/service"
)

// greeter answers UnaryCall with the caller's subject.
type greeter struct {
	testpb.UnimplementedTestServiceServer
}

func (greeter) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	p, _ := authn.FromContext(ctx)
	return &testpb.SimpleResponse{Username: p.Subject()}, nil
}

func (greeter) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func register(r grpc.ServiceRegistrar) { testpb.RegisterTestServiceServer(r, greeter{}) }

// config gives grpc.testing.TestService, which has no Loam options in its
// .proto, its rules in the authz section.
func config(iss *loamtest.Issuer) service.Config {
	var cfg service.Config
	cfg.Authn = iss.AuthnConfig()
	cfg.Authz = authz.Config{
		Roles: map[string][]string{"greeter": {"greetings.send"}},
		Rules: map[string]authz.Rule{
			"/grpc.testing.TestService/EmptyCall": {Public: true},
			"/grpc.testing.TestService/UnaryCall": {Permission: "greetings.send"},
			"/grpc.testing.TestService/*":         {Authenticated: true},
		},
	}
	return cfg
}

func TestKit(t *testing.T) {
	iss := loamtest.NewIssuer(t, "greetings-api")
	srv := loamtest.StartServer(t, config(iss), register)
	call := func(token string) (string, error) {
		resp, err := testpb.NewTestServiceClient(srv.Client(t, token)).UnaryCall(t.Context(), &testpb.SimpleRequest{})
		return resp.GetUsername(), err
	}
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"allowed", iss.Token(t, "alice", loamtest.Roles("greeter")), codes.OK},
		{"denied", iss.Token(t, "bob", loamtest.Roles("visitor")), codes.PermissionDenied},
		{"no roles", iss.Token(t, "bob"), codes.PermissionDenied},
		{"unauthenticated", "", codes.Unauthenticated},
		{"expired", iss.Token(t, "alice", loamtest.Roles("greeter"), loamtest.Expired()), codes.Unauthenticated},
		{"another audience", iss.Token(t, "alice", loamtest.Roles("greeter"), loamtest.ForAudience("other-api")), codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := call(tt.token)
			if status.Code(err) != tt.want {
				t.Errorf("UnaryCall = %q, %v; want %v", got, err, tt.want)
			}
			if tt.want == codes.OK && got != "alice" {
				t.Errorf("UnaryCall answered %q, want alice", got)
			}
		})
	}
	if _, err := testpb.NewTestServiceClient(srv.Client(t, "")).EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Errorf("public EmptyCall without a token = %v", err)
	}
	// The rule table that the server enforces answers questions directly.
	alice := authn.NewPrincipal(authn.Identity{Subject: "alice", Roles: []string{"greeter"}})
	if d := srv.Authorizer().Explain(alice, "/grpc.testing.TestService/UnaryCall", nil); !d.Allowed {
		t.Errorf("Explain(alice, UnaryCall) = %v, want allowed", d)
	}
}

// TestStartServerReportsBrokenContracts: a server that cannot start fails
// the test with the reason, before any call.
func TestStartServerReportsBrokenContracts(t *testing.T) {
	iss := loamtest.NewIssuer(t, "greetings-api")
	cfg := config(iss)
	delete(cfg.Authz.Rules, "/grpc.testing.TestService/*")
	rec := &recorder{TB: t}
	func() {
		defer func() { recover() }() // Fatalf of the recorder
		loamtest.StartServer(rec, cfg, register)
	}()
	if !strings.Contains(rec.msg, "/grpc.testing.TestService/FullDuplexCall") {
		t.Errorf("StartServer failed with %q, want it to name a method without a rule", rec.msg)
	}
}

// recorder is a testing.TB whose Fatalf records the message and stops.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic("fatal")
}

// Example is a service's test of its access rules: allowed, denied, and
// unauthenticated, against the real server. (It needs a *testing.T, so it
// is compiled here and run as TestKit.)
func Example() {
	var t *testing.T // the test's own
	iss := loamtest.NewIssuer(t, "greetings-api")
	srv := loamtest.StartServer(t, config(iss), func(r grpc.ServiceRegistrar) {
		testpb.RegisterTestServiceServer(r, greeter{})
	})
	alice := testpb.NewTestServiceClient(srv.Client(t, iss.Token(t, "alice", loamtest.Roles("greeter"))))
	if _, err := alice.UnaryCall(t.Context(), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	anonymous := testpb.NewTestServiceClient(srv.Client(t, ""))
	if _, err := anonymous.UnaryCall(t.Context(), &testpb.SimpleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous UnaryCall = %v, want Unauthenticated", err)
	}
}
