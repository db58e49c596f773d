package authz_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/config"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  authz.Config
		want []string // substrings, one per problem; none for a valid config
	}{
		{name: "zero value", cfg: authz.Config{}},
		{name: "full", cfg: authz.Config{
			Roles:            map[string][]string{"admin": {"*"}, "farmer": {"farm.*", "barn.doors.*", "barn.paint"}},
			Rules:            map[string]authz.Rule{"/a.v1.B/C": {Permission: "a.c", Condition: "true"}, "/a.v1.B/D": {Public: true}},
			DecisionLogLevel: "debug",
		}},
		{name: "every problem at once", cfg: authz.Config{
			Roles: map[string][]string{"farmer": {"farm.*.read"}},
			Rules: map[string]authz.Rule{
				"a.v1.B/C":  {Public: true},
				"/a.v1.B/D": {},
				"/a.v1.B/E": {Public: true, Authenticated: true},
				"/a.v1.B/F": {Permission: "A.c"},
				"/a.v1.B/G": {Public: true, Condition: "true"},
			},
			HandlerPermissions: []string{"ok.read", "readall"},
			DecisionLogLevel:   "verbose",
		}, want: []string{
			`roles.farmer[0]: "farm.*.read" is not a permission`,
			"rules.a.v1.B/C: is not a full method name",
			"rules./a.v1.B/D: set exactly one of public, authenticated or permission",
			"rules./a.v1.B/E: set exactly one",
			`rules./a.v1.B/F: permission "A.c" must be dot-separated`,
			"rules./a.v1.B/G: a public method has no principal",
			`handler_permissions[1]: "readall" is not a permission`,
			`decision_log_level: "verbose" is not debug, info, warn or error`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, authz.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			if got := strings.Count(err.Error(), "\n") + 1; got != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", got, len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// TestConfigLoads: the section loads from a file with config.Load, method
// names (which contain dots) included.
func TestConfigLoads(t *testing.T) {
	dir := t.TempDir()
	yaml := `
authz:
  scopes_grant: true
  roles:
    farmer: ["farm.*"]
    keycloak.realm-admin: ["*"]
  rules:
    /loam.test.v1.Stub/Unary: {permission: stub.call, condition: "principal.subject != ''"}
    /loam.test.v1.Stub/Stream: {authenticated: true}
`
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	type serviceConfig struct {
		Authz authz.Config `koanf:"authz"`
	}
	got, err := config.Load[serviceConfig](context.Background(), config.WithDir(dir), config.WithEnvironment("test"))
	if err != nil {
		t.Fatal(err)
	}
	want := authz.Config{
		Roles: map[string][]string{"farmer": {"farm.*"}, "keycloak.realm-admin": {"*"}},
		Rules: map[string]authz.Rule{
			"/loam.test.v1.Stub/Unary":  {Permission: "stub.call", Condition: "principal.subject != ''"},
			"/loam.test.v1.Stub/Stream": {Authenticated: true},
		},
		ScopesGrant:        true,
		ConditionCostLimit: authz.DefaultConditionCostLimit,
		DenyLogRate:        authz.DefaultDenyLogRate,
	}
	if diff := cmp.Diff(want, got.Authz); diff != "" {
		t.Errorf("config.Load() authz mismatch (-want +got):\n%s", diff)
	}
	if err := got.Authz.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

func TestCheckCondition(t *testing.T) {
	req := plantRequest("alice", 1).Descriptor()
	for _, tt := range []struct {
		expr    string
		req     bool
		wantErr string
	}{
		{"request.planter_id == principal.subject", true, ""},
		{"principal.roles.exists(r, r == 'admin')", false, ""},
		{"request.planter == principal.subject", true, "planter"},
		{"request.count == 'two'", true, "no matching overload"},
		{"principal.subject ==", false, "Syntax error"},
		{"request.count + 1", true, "not bool"},
	} {
		var d protoreflect.MessageDescriptor
		if tt.req {
			d = req
		}
		err := authz.CheckCondition(tt.expr, d)
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("CheckCondition(%q) = %v, want an error containing %q", tt.expr, err, tt.wantErr)
		}
	}
}
