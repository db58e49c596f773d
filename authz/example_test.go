package authz_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
)

// quiet logs only warnings, without times, to the examples' output.
var quiet = slog.New(slog.NewTextHandler(stdout{}, &slog.HandlerOptions{
	Level: slog.LevelWarn,
	ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	},
}))

// stdout writes to the os.Stdout of the moment, which examples replace.
type stdout struct{}

func (stdout) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

func ExampleNew() {
	// The application registers its services, then builds the Authorizer
	// from what the server serves. FarmService's methods carry
	// loam.options.v1.access options; the stub service has no descriptor,
	// so its rules come from the configuration.
	srv := grpc.NewServer()
	srv.RegisterService(serviceDesc("loam.authztest.v1.FarmService"), nil)
	(&stubserver.Stub{}).Register(srv)

	cfg := authz.Config{
		Roles: map[string][]string{
			"farmer": {"farm.*"},
			"admin":  {"*"},
		},
		Rules: map[string]authz.Rule{
			"/loam.test.v1.Stub/Unary":  {Permission: "stub.call"},
			"/loam.test.v1.Stub/Stream": {Authenticated: true},
		},
	}
	a, err := authz.New(cfg, srv.GetServiceInfo(), authz.WithLogger(quiet))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = grpc.NewServer(
		grpc.ChainUnaryInterceptor( /* authn's first, then */ a.UnaryInterceptor),
		grpc.ChainStreamInterceptor( /* authn's first, then */ a.StreamInterceptor))

	// Without the configuration rules, the server must not start.
	cfg.Rules = nil
	_, err = authz.New(cfg, srv.GetServiceInfo(), authz.WithLogger(quiet))
	fmt.Println(errors.Is(err, authz.ErrNoRule), err)
	// Output:
	// level=WARN msg="authz policy warning" warning="roles.admin[0]: \"*\" grants every permission"
	// true authz: methods without an access rule (declare option (loam.options.v1.access) or set authz.rules): /loam.test.v1.Stub/Stream, /loam.test.v1.Stub/Unary
}

func ExampleAuthorizer_Explain() {
	a, err := authz.New(authz.Config{Roles: map[string][]string{"farmer": {"farm.*"}, "viewer": {"farm.harvest"}}},
		services("loam.authztest.v1.FarmService"), authz.WithLogger(quiet))
	if err != nil {
		panic(err)
	}
	// Plant needs farm.plant and "request.planter_id == principal.subject".
	plant := "/loam.authztest.v1.FarmService/Plant"
	alice := authn.NewPrincipal(authn.Identity{Subject: "alice", Roles: []string{"viewer", "farmer"}})
	fmt.Println(a.Explain(alice, plant, plantRequest("alice", 3)))
	fmt.Println(a.Explain(alice, plant, plantRequest("bob", 3)))
	fmt.Println(a.Explain(authn.NewPrincipal(authn.Identity{Subject: "bob", Roles: []string{"viewer"}}), plant, nil))
	fmt.Println(a.Explain(nil, plant, nil))
	// Output:
	// allow /loam.authztest.v1.FarmService/Plant: granted: permission farm.plant by role farmer; condition true
	// deny /loam.authztest.v1.FarmService/Plant: condition_false: permission farm.plant by role farmer; condition false
	// deny /loam.authztest.v1.FarmService/Plant: not_granted: permission farm.plant
	// deny /loam.authztest.v1.FarmService/Plant: unauthenticated: permission farm.plant
}

func ExampleCheck() {
	a, err := authz.New(authz.Config{Roles: map[string][]string{"auditor": {"barns.audit"}}},
		services("loam.authztest.v1.FarmService"), authz.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	// In a handler, ctx comes from the interceptors; a test builds it.
	ctx := authz.NewContext(authn.NewContext(context.Background(), authn.NewPrincipal(authn.Identity{Subject: "ann", Roles: []string{"auditor"}})), a)

	fmt.Println(authz.Check(ctx, "barns.audit"))
	err = authz.Check(ctx, "barns.demolish")
	fmt.Println(errors.Is(err, authz.ErrPermissionDenied), status.Convert(err).Message())
	// Output:
	// <nil>
	// true permission denied
}

func ExampleAuthorizer_SetPolicy() {
	a, err := authz.New(authz.Config{Roles: map[string][]string{"farmer": {"farm.harvest"}}},
		services("loam.authztest.v1.FarmService"), authz.WithLogger(quiet))
	if err != nil {
		panic(err)
	}
	bob := authn.NewPrincipal(authn.Identity{Subject: "bob", Roles: []string{"farmer"}})
	harvest := "/loam.authztest.v1.FarmService/Harvest"

	// An invalid policy is refused and the last good one stays.
	fmt.Println(a.SetPolicy(map[string][]string{"farmer": {"Farm.*"}}))
	fmt.Println(a.Explain(bob, harvest, nil).Allowed)

	// A valid one applies to the next decision; its warnings are logged.
	fmt.Println(a.SetPolicy(map[string][]string{"farmer": {"farm.milk"}}))
	fmt.Println(a.Explain(bob, harvest, nil).Allowed)
	// Output:
	// authz: invalid configuration: roles.farmer[0]: "Farm.*" is not a permission ("captures.create"), a wildcard ("captures.*") or "*"
	// true
	// level=WARN msg="authz policy warning" warning="roles.farmer[0]: \"farm.milk\" is not a permission that a method rule declares"
	// <nil>
	// false
}
