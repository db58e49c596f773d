package authz_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
)

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name     string
		cfg      authz.Config
		services []string
		want     error
		contains []string
	}{
		{
			name:     "methods without a rule, every one listed, sorted",
			services: []string{farm, barn, "stub"},
			want:     authz.ErrNoRule,
			contains: []string{": /loam.authztest.v1.BarnService/Close, /loam.authztest.v1.BarnService/Open, /loam.test.v1.Stub/Stream, /loam.test.v1.Stub/Unary"},
		},
		{
			name:     "CEL errors caught at start-up",
			services: []string{broken},
			want:     authz.ErrInvalidRule,
			contains: []string{
				`/loam.authztest.v1.BrokenService/MissingField: condition "request.gardener_id == principal.subject": ERROR: <input>:1:8: undefined field 'gardener_id'`,
				`/loam.authztest.v1.BrokenService/NotBool: condition "request.planter_id": the condition is of type string, not bool`,
				`/loam.authztest.v1.BrokenService/PrincipalTypo: condition "principal.subjet == 'x'": ERROR: <input>:1:10: undefined field 'subjet'`,
				`/loam.authztest.v1.BrokenService/StreamIn: a condition cannot be enforced on a client-streaming method`,
			},
		},
		{
			name:     "config rule contradicting the proto rule",
			cfg:      authz.Config{Rules: map[string]authz.Rule{"/loam.authztest.v1.FarmService/Harvest": {Permission: "farm.reap"}}},
			services: []string{farm},
			want:     authz.ErrInvalidRule,
			contains: []string{`/loam.authztest.v1.FarmService/Harvest: config rule "permission farm.reap" contradicts the proto rule "permission farm.harvest"`},
		},
		{
			name:     "config rule for no registered method",
			cfg:      authz.Config{Rules: map[string]authz.Rule{"/loam.authztest.v1.FarmService/Harvst": {Public: true}}},
			services: []string{farm},
			want:     authz.ErrInvalidRule,
			contains: []string{"rules./loam.authztest.v1.FarmService/Harvst: no registered method has this name"},
		},
		{
			name:     "condition on a bidirectional stream from config",
			cfg:      authz.Config{Rules: map[string]authz.Rule{stubserver.UnaryMethod: {Authenticated: true}, stubserver.StreamMethod: {Authenticated: true, Condition: "true"}}},
			services: []string{"stub"},
			want:     authz.ErrInvalidRule,
			contains: []string{"/loam.test.v1.Stub/Stream: a condition cannot be enforced on a client-streaming method"},
		},
		{
			name:     "config condition that does not type-check",
			cfg:      authz.Config{Rules: map[string]authz.Rule{stubserver.UnaryMethod: {Authenticated: true, Condition: "principal.role == 'x'"}, stubserver.StreamMethod: {Authenticated: true}}},
			services: []string{"stub"},
			want:     authz.ErrInvalidRule,
			contains: []string{"undefined field 'role'"},
		},
		{
			name:     "invalid configuration",
			cfg:      authz.Config{Roles: map[string][]string{"viewer": {"Farm.*"}}},
			services: []string{farm},
			want:     authz.ErrInvalidConfig,
			contains: []string{`roles.viewer[0]: "Farm.*" is not a permission`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := authz.New(tt.cfg, services(tt.services...), authz.WithLogger(discard))
			if a != nil || !errors.Is(err, tt.want) {
				t.Fatalf("New() = %v, %v, want nil, %v", a, err, tt.want)
			}
			for _, c := range tt.contains {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("New() = %v\nwant it to contain %q", err, c)
				}
			}
		})
	}
}

func TestNewAccepts(t *testing.T) {
	tests := []struct {
		name     string
		cfg      authz.Config
		services []string
	}{
		{"annotated service", authz.Config{}, []string{farm}},
		{"config rule equal to the proto rule", authz.Config{Rules: map[string]authz.Rule{"/loam.authztest.v1.FarmService/Harvest": {Permission: "farm.harvest"}}}, []string{farm}},
		{"config rules for methods without a descriptor", authz.Config{Rules: map[string]authz.Rule{
			stubserver.UnaryMethod:  {Permission: "stub.call", Condition: "principal.subject == 'alice' && request == 'hello'"},
			stubserver.StreamMethod: {Authenticated: true},
		}}, []string{"stub"}},
		{"health is exempt", authz.Config{}, []string{farm, "health"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := authz.New(tt.cfg, services(tt.services...), authz.WithLogger(discard)); err != nil {
				t.Errorf("New() = %v, want nil", err)
			}
		})
	}
}
