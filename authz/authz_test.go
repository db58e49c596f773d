package authz_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
)

// farmRoles is the role policy of most tests.
var farmRoles = map[string][]string{
	"harvester": {"farm.harvest"},
	"farmer":    {"farm.*"},
	"root":      {"*"},
	"painter":   {"barn.paint"},
}

func newFarm(t testing.TB, cfg authz.Config, names ...string) *authz.Authorizer {
	t.Helper()
	if cfg.Roles == nil {
		cfg.Roles = farmRoles
	}
	if len(names) == 0 {
		names = []string{farm}
	}
	a, err := authz.New(cfg, services(names...), authz.WithLogger(discard))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

func TestUnaryDecisions(t *testing.T) {
	a := newFarm(t, authz.Config{})
	alice := principal("alice", "farmer")
	tests := []struct {
		name     string
		method   string
		p        *authn.Principal
		req      proto.Message
		want     codes.Code
		reason   authz.Reason
		grantBy  string
		errMatch string
	}{
		{name: "public without principal", method: "Survey", want: codes.OK, reason: authz.ReasonPublic},
		{name: "public with principal", method: "Survey", p: alice, want: codes.OK, reason: authz.ReasonPublic},
		{name: "authenticated without principal", method: "Inspect", want: codes.Unauthenticated, reason: authz.ReasonUnauthenticated},
		{name: "authenticated, principal without roles", method: "Inspect", p: principal("bob"), want: codes.OK, reason: authz.ReasonAuthenticated},
		{name: "permission granted by exact role", method: "Harvest", p: principal("bob", "harvester"), want: codes.OK, reason: authz.ReasonGranted, grantBy: "harvester"},
		{name: "permission granted by wildcard", method: "Harvest", p: alice, want: codes.OK, reason: authz.ReasonGranted, grantBy: "farmer"},
		{name: "permission granted by star", method: "Harvest", p: principal("bob", "root"), want: codes.OK, reason: authz.ReasonGranted, grantBy: "root"},
		{name: "first granting role is named", method: "Harvest", p: principal("bob", "painter", "ghost", "harvester", "farmer"), want: codes.OK, reason: authz.ReasonGranted, grantBy: "harvester"},
		{name: "permission denied", method: "Harvest", p: principal("bob", "painter"), want: codes.PermissionDenied, reason: authz.ReasonNotGranted},
		{name: "unknown role", method: "Harvest", p: principal("bob", "ghost"), want: codes.PermissionDenied, reason: authz.ReasonNotGranted},
		{name: "principal without roles", method: "Harvest", p: principal("bob"), want: codes.PermissionDenied, reason: authz.ReasonNotGranted},
		{name: "scope does not grant by default", method: "Harvest", p: authn.NewPrincipal(authn.Identity{Subject: "bob", Scopes: []string{"farm.harvest"}}), want: codes.PermissionDenied, reason: authz.ReasonNotGranted},
		{name: "permission without principal", method: "Harvest", want: codes.Unauthenticated, reason: authz.ReasonUnauthenticated},
		{name: "condition true", method: "Plant", p: alice, req: plantRequest("alice", 1), want: codes.OK, reason: authz.ReasonGranted, grantBy: "farmer"},
		{name: "condition false", method: "Plant", p: alice, req: plantRequest("bob", 1), want: codes.PermissionDenied, reason: authz.ReasonConditionFalse, grantBy: "farmer"},
		{name: "condition not reached without permission", method: "Plant", p: principal("alice", "painter"), req: plantRequest("alice", 1), want: codes.PermissionDenied, reason: authz.ReasonNotGranted},
		{name: "condition dividing by zero", method: "Divide", p: alice, req: plantRequest("alice", 0), want: codes.PermissionDenied, reason: authz.ReasonConditionError, errMatch: "division by zero"},
		{name: "condition dividing by non-zero", method: "Divide", p: alice, req: plantRequest("alice", 10), want: codes.OK, reason: authz.ReasonAuthenticated},
		{name: "condition indexing a missing key", method: "Tenant", p: alice, req: plantRequest("alice", 1), want: codes.PermissionDenied, reason: authz.ReasonConditionError, errMatch: "no such key"},
		{name: "condition exceeding the cost limit", method: "Loop", p: alice, req: plantRequest("alice", 1), want: codes.PermissionDenied, reason: authz.ReasonConditionError, errMatch: "cost limit"},
		{name: "unknown method", method: "Nope", p: principal("bob", "root"), want: codes.PermissionDenied, reason: authz.ReasonNoRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := fullMethod(farm, tt.method)
			ctx := context.Background()
			if tt.p != nil {
				ctx = authn.NewContext(ctx, tt.p)
			}
			req := tt.req
			if req == nil {
				req = plantRequest("", 1)
			}
			called := false
			_, err := a.UnaryInterceptor(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, req any) (any, error) {
				called = true
				return req, nil
			})
			if got := status.Code(err); got != tt.want {
				t.Errorf("UnaryInterceptor(%s) = %v, want %v", tt.method, err, tt.want)
			}
			if called != (tt.want == codes.OK) {
				t.Errorf("UnaryInterceptor(%s) called the handler: %v, want %v", tt.method, called, tt.want == codes.OK)
			}
			if msg := status.Convert(err).Message(); err != nil && msg != "permission denied" && msg != "authentication required" {
				t.Errorf("UnaryInterceptor(%s) message = %q, want a generic one", tt.method, msg)
			}

			d := a.Explain(tt.p, method, req)
			if d.Allowed != (tt.want == codes.OK) || d.Reason != tt.reason || d.Role != tt.grantBy {
				t.Errorf("Explain(%s) = %s (role %q), want reason %s, role %q", tt.method, d, d.Role, tt.reason, tt.grantBy)
			}
			if tt.errMatch != "" && (d.Err == nil || !strings.Contains(d.Err.Error(), tt.errMatch)) {
				t.Errorf("Explain(%s).Err = %v, want one containing %q", tt.method, d.Err, tt.errMatch)
			}
		})
	}
}

func TestScopesGrant(t *testing.T) {
	a := newFarm(t, authz.Config{ScopesGrant: true})
	p := authn.NewPrincipal(authn.Identity{Subject: "svc", Scopes: []string{"openid", "farm.harvest"}})
	if d := a.Explain(p, fullMethod(farm, "Harvest"), nil); !d.Allowed || d.Scope != "farm.harvest" || d.Role != "" {
		t.Errorf("Explain(Harvest) = %s (scope %q), want granted by scope farm.harvest", d, d.Scope)
	}
	if d := a.Explain(p, fullMethod(farm, "Plant"), nil); d.Allowed {
		t.Errorf("Explain(Plant) = %s, want denied: a scope grants only its own name", d)
	}
}

func TestExplain(t *testing.T) {
	a := newFarm(t, authz.Config{})
	tests := []struct {
		name   string
		p      *authn.Principal
		method string
		req    proto.Message
		want   string
	}{
		{"granted with condition", principal("alice", "farmer"), "Plant", plantRequest("alice", 1),
			"allow /loam.authztest.v1.FarmService/Plant: granted: permission farm.plant by role farmer; condition true"},
		{"nil request is an empty one", principal("alice", "farmer"), "Plant", nil,
			"deny /loam.authztest.v1.FarmService/Plant: condition_false: permission farm.plant by role farmer; condition false"},
		{"condition error", principal("alice"), "Divide", plantRequest("alice", 0),
			"deny /loam.authztest.v1.FarmService/Divide: condition_error; condition failed: division by zero"},
		{"unknown method", principal("alice"), "Nope", nil,
			"deny /loam.authztest.v1.FarmService/Nope: no_rule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.Explain(tt.p, fullMethod(farm, tt.method), tt.req).String(); got != tt.want {
				t.Errorf("Explain(%s).String() = %q, want %q", tt.method, got, tt.want)
			}
		})
	}
	d := a.Explain(nil, fullMethod(farm, "Plant"), nil)
	if d.Source != "proto" || d.Rule != (authz.Rule{Permission: "farm.plant", Condition: "request.planter_id == principal.subject"}) {
		t.Errorf("Explain(Plant) rule = %s from %q, want the proto rule", d.Rule, d.Source)
	}
}

func TestCheck(t *testing.T) {
	a := newFarm(t, authz.Config{Roles: map[string][]string{"auditor": {"barns.audit"}}})
	tests := []struct {
		name       string
		ctx        context.Context
		permission string
		want       error
		wantCode   codes.Code
	}{
		{"granted", authz.NewContext(authn.NewContext(context.Background(), principal("ann", "auditor")), a), "barns.audit", nil, codes.OK},
		{"not granted", authz.NewContext(authn.NewContext(context.Background(), principal("ann", "auditor")), a), "barns.burn", authz.ErrPermissionDenied, codes.PermissionDenied},
		{"malformed permission", authz.NewContext(authn.NewContext(context.Background(), principal("ann", "auditor")), a), "Barns.Audit", authz.ErrPermissionDenied, codes.PermissionDenied},
		{"no principal", authz.NewContext(context.Background(), a), "barns.audit", authz.ErrUnauthenticated, codes.Unauthenticated},
		{"no authorizer", authn.NewContext(context.Background(), principal("ann", "auditor")), "barns.audit", authz.ErrNoAuthorizer, codes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := authz.Check(tt.ctx, tt.permission)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("Check(%q) = %v, want %v", tt.permission, err, tt.want)
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("status.Code(Check(%q)) = %v, want %v", tt.permission, got, tt.wantCode)
			}
			if s, ok := status.FromError(err); ok && err != nil && s.Message() != "permission denied" && s.Message() != "authentication required" {
				t.Errorf("Check(%q) status message = %q, want a generic one", tt.permission, s.Message())
			}
		})
	}
}

// TestInterceptorProvidesCheck: a handler behind UnaryInterceptor can call
// Check.
func TestInterceptorProvidesCheck(t *testing.T) {
	a := newFarm(t, authz.Config{})
	ctx := authn.NewContext(context.Background(), principal("bob", "harvester"))
	_, err := a.UnaryInterceptor(ctx, plantRequest("", 1), &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Harvest")}, func(ctx context.Context, _ any) (any, error) {
		return nil, errors.Join(authz.Check(ctx, "farm.harvest"), ignore(authz.Check(ctx, "farm.plant"), authz.ErrPermissionDenied))
	})
	if err != nil {
		t.Errorf("Check in handler = %v, want nil", err)
	}
}

// ignore returns nil when err matches want, else an error saying so.
func ignore(err, want error) error {
	if errors.Is(err, want) {
		return nil
	}
	return errors.New("got " + errString(err) + ", want " + want.Error())
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
