package authz_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	grpcauthz "google.golang.org/grpc/authz"
	"google.golang.org/grpc/metadata"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
)

// The benchmarks decide one call of a method that needs farm.harvest (or
// farm.plant with a condition), for a principal whose role "harvester"
// (or "farmer", by wildcard) grants it, with telemetry off (no-op meter,
// no span, decisions below the log level).

func benchAuthorizer(b *testing.B) *authz.Authorizer {
	return newFarm(b, authz.Config{Roles: map[string][]string{
		"harvester": {"farm.harvest"},
		"farmer":    {"farm.*"},
	}})
}

var sink any

func BenchmarkDecision(b *testing.B) {
	a := benchAuthorizer(b)
	harvester := principal("bob", "viewer", "harvester")
	farmer := principal("alice", "farmer")
	req := plantRequest("alice", 1)

	// Explain is the decision the interceptors make, without recording it.
	b.Run("permission/Explain", func(b *testing.B) {
		method := fullMethod(farm, "Harvest")
		for b.Loop() {
			if !a.Explain(harvester, method, req).Allowed {
				b.Fatal("denied")
			}
		}
	})
	// Check adds the Authorizer and principal lookups in ctx and recording.
	b.Run("permission/Check", func(b *testing.B) {
		ctx := authz.NewContext(authn.NewContext(context.Background(), harvester), a)
		for b.Loop() {
			if err := authz.Check(ctx, "farm.harvest"); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The interceptor adds recording and the context that carries the
	// Authorizer to the handler (context.WithValue: one allocation).
	b.Run("permission/UnaryInterceptor", func(b *testing.B) { benchUnary(b, a, harvester, "Harvest", req) })

	// The same compiled condition, evaluated by cel-go directly with a
	// ready activation: the floor that the Authorizer adds its rule,
	// role and activation handling to.
	b.Run("condition/cel-go", func(b *testing.B) {
		prg, act := authz.CompiledCondition(a, fullMethod(farm, "Plant"), req, farmer)
		for b.Loop() {
			out, _, err := prg.Eval(act)
			if err != nil || out.Value() != true {
				b.Fatal(out, err)
			}
			sink = out
		}
	})
	b.Run("condition/Explain", func(b *testing.B) {
		method := fullMethod(farm, "Plant")
		for b.Loop() {
			if d := a.Explain(farmer, method, req); !d.Allowed {
				b.Fatal(d)
			}
		}
	})
	b.Run("condition/UnaryInterceptor", func(b *testing.B) { benchUnary(b, a, farmer, "Plant", req) })
}

// benchUnary calls a's UnaryInterceptor for FarmService's method as p.
func benchUnary(b *testing.B, a *authz.Authorizer, p *authn.Principal, method string, req any) {
	ctx := authn.NewContext(context.Background(), p)
	info := &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, method)}
	for b.Loop() {
		if _, err := a.UnaryInterceptor(ctx, req, info, echo); err != nil {
			b.Fatal(err)
		}
	}
}

func echo(_ context.Context, req any) (any, error) { return req, nil }

// grpcAuthzPolicy is the closest grpc-go authz equivalent of "role
// harvester may call Harvest": grpc-go's policies match the path, headers
// and the mTLS principal, not token roles, so the role travels as an
// "x-role" header that an earlier interceptor would have set from the
// verified token.
const grpcAuthzPolicy = `{
  "name": "farm",
  "allow_rules": [{
    "name": "harvest",
    "request": {
      "paths": ["/loam.authztest.v1.FarmService/Harvest"],
      "headers": [{"key": "x-role", "values": ["harvester"]}]
    }
  }]
}`

// BenchmarkGRPCAuthz is the peer: grpc-go's own authz interceptor,
// invoked directly like ours. Its engine needs the incoming metadata, the
// peer, the method and the transport connection from a real server
// context, so the context of one real call on loopback is captured and
// reused.
func BenchmarkGRPCAuthz(b *testing.B) {
	static, err := grpcauthz.NewStatic(grpcAuthzPolicy)
	if err != nil {
		b.Fatal(err)
	}
	var captured context.Context
	capture := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		captured = ctx
		return h(ctx, req)
	}
	pass := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, ss)
	}
	cc := serve(b, capture, pass, farm)
	out := plantRequest("", 0)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-role", "harvester")
	if err := cc.Invoke(ctx, fullMethod(farm, "Harvest"), plantRequest("", 1), out); err != nil {
		b.Fatal(err)
	}
	info := &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Harvest")}
	req := plantRequest("alice", 1)
	b.Run("permission/UnaryInterceptor", func(b *testing.B) {
		for b.Loop() {
			if _, err := static.UnaryInterceptor(captured, req, info, echo); err != nil {
				b.Fatal(err)
			}
		}
	})
}
