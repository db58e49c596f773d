package authz_test

import (
	"context"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
)

// TestOverGRPC runs decisions through a real server and client on
// loopback, behind a stand-in for authn.
func TestOverGRPC(t *testing.T) {
	names := []string{farm, "stub", "health"}
	cfg := authz.Config{Roles: farmRoles, Rules: map[string]authz.Rule{
		stubserver.UnaryMethod:  {Permission: "stub.call", Condition: "request == 'hello'"},
		stubserver.StreamMethod: {Authenticated: true},
	}}
	a, err := authz.New(cfg, services(names...), authz.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	cc := serve(t, a.UnaryInterceptor, a.StreamInterceptor, names...)

	t.Run("unary", func(t *testing.T) {
		tests := []struct {
			name    string
			ctx     context.Context
			method  string
			planter string
			want    codes.Code
			wantMsg string
		}{
			{"public, anonymous", callAs(""), "Survey", "", codes.OK, ""},
			{"granted by wildcard, condition true", callAs("alice", "farmer"), "Plant", "alice", codes.OK, ""},
			{"condition false", callAs("alice", "farmer"), "Plant", "bob", codes.PermissionDenied, "permission denied"},
			{"not granted", callAs("alice", "painter"), "Harvest", "", codes.PermissionDenied, "permission denied"},
			{"anonymous on a permission", callAs(""), "Harvest", "", codes.Unauthenticated, "authentication required"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out := dynamicpb.NewMessage(farmFile().Messages().ByName("PlantRequest"))
				err := cc.Invoke(tt.ctx, fullMethod(farm, tt.method), plantRequest(tt.planter, 1), out)
				if s := status.Convert(err); s.Code() != tt.want || (err != nil && s.Message() != tt.wantMsg) {
					t.Errorf("Invoke(%s) = %v, want %v %q", tt.method, err, tt.want, tt.wantMsg)
				}
			})
		}
	})

	t.Run("server stream with condition", func(t *testing.T) {
		tests := []struct {
			name    string
			ctx     context.Context
			planter string
			want    codes.Code
		}{
			{"condition true", callAs("alice", "farmer"), "alice", codes.OK},
			{"condition false", callAs("alice", "farmer"), "bob", codes.PermissionDenied},
			{"not granted", callAs("alice", "painter"), "alice", codes.PermissionDenied},
			{"anonymous", callAs(""), "alice", codes.Unauthenticated},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}
				if err := streamCall(t, tt.ctx, cc, desc, 1, tt.planter); status.Code(err) != tt.want {
					t.Errorf("Watch = %v, want %v", err, tt.want)
				}
			})
		}
	})

	t.Run("client stream", func(t *testing.T) {
		tests := []struct {
			name string
			ctx  context.Context
			want codes.Code
		}{
			{"granted", callAs("alice", "farmer"), codes.OK},
			{"principal without roles", callAs("alice"), codes.PermissionDenied},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				desc := &grpc.StreamDesc{StreamName: "Upload", ClientStreams: true}
				if err := streamCall(t, tt.ctx, cc, desc, 3, "alice"); status.Code(err) != tt.want {
					t.Errorf("Upload = %v, want %v", err, tt.want)
				}
			})
		}
	})

	t.Run("config rules", func(t *testing.T) {
		tests := []struct {
			name string
			ctx  context.Context
			in   string
			want codes.Code
		}{
			{"stub.call by wildcard role, condition true", callAs("alice", "root"), "hello", codes.OK},
			{"condition false", callAs("alice", "root"), "goodbye", codes.PermissionDenied},
			{"not granted", callAs("alice", "farmer"), "hello", codes.PermissionDenied},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := stubserver.Unary(tt.ctx, cc, tt.in)
				if got := status.Code(err); got != tt.want {
					t.Errorf("stubserver.Unary(%q) = %v, want %v", tt.in, err, tt.want)
				}
			})
		}
	})

	t.Run("health is exempt", func(t *testing.T) {
		if _, err := healthpb.NewHealthClient(cc).Check(callAs(""), &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("Health.Check() = %v, want nil", err)
		}
	})
}

// TestExemptRestrictedByConfig: a config rule for a health method replaces
// its exemption.
func TestExemptRestrictedByConfig(t *testing.T) {
	cfg := authz.Config{Rules: map[string]authz.Rule{"/grpc.health.v1.Health/Check": {Authenticated: true}}}
	a := newFarm(t, cfg, farm, "health")
	cc := serve(t, a.UnaryInterceptor, a.StreamInterceptor, farm, "health")
	hc := healthpb.NewHealthClient(cc)
	if _, err := hc.Check(callAs(""), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Health.Check() anonymous = %v, want Unauthenticated", err)
	}
	if _, err := hc.Check(callAs("alice"), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("Health.Check() as alice = %v, want nil", err)
	}
}

// streamCall opens a stream of FarmService, sends n requests for planter,
// closes its side and returns the error of the first receive.
func streamCall(t *testing.T, ctx context.Context, cc *grpc.ClientConn, desc *grpc.StreamDesc, n int, planter string) error {
	t.Helper()
	cs, err := cc.NewStream(ctx, desc, fullMethod(farm, desc.StreamName))
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		// A stream refused at its start fails sends with io.EOF; the
		// status comes with the receive.
		if err := cs.SendMsg(plantRequest(planter, 1)); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	return cs.RecvMsg(dynamicpb.NewMessage(farmFile().Messages().ByName("PlantRequest")))
}
