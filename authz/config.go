package authz

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/authz/internal/condition"
	"github.com/loamhq/loam/authz/internal/policy"
)

// DefaultConditionCostLimit is the CEL cost limit of a condition when
// Config.ConditionCostLimit is zero.
const DefaultConditionCostLimit = 1000

// DefaultDenyLogRate is how many deny lines a second are logged when
// Config.DenyLogRate is zero.
const DefaultDenyLogRate = 10

// Config is the authz configuration section (the "authz" key of a Loam
// service's configuration). The zero value is valid: no roles (so no
// permission is granted), no config rules, scopes grant nothing.
type Config struct {
	// Roles maps a role name, as it appears in authn.Principal.Roles, to
	// the permissions it grants: exact names ("captures.create"),
	// wildcards over a prefix ("captures.*" grants every permission that
	// starts with "captures."), or "*" for every permission (allowed, but
	// reported by Warnings). A principal's role that Roles does not name
	// grants nothing. SetPolicy replaces Roles at run time.
	Roles map[string][]string `koanf:"roles"`
	// Rules gives the access rule of methods whose .proto the team does
	// not own, keyed by full method name ("/pkg.Service/Method"), or by
	// "/pkg.Service/*" for every method of a service that has no rule of
	// its own (neither in its .proto nor by its full name here). A rule
	// here for a method whose descriptor declares a different rule is a
	// start-up error; the same rule is harmless. Rules may also name the
	// otherwise exempt gRPC health and reflection methods, to restrict
	// them.
	Rules map[string]Rule `koanf:"rules"`
	// HandlerPermissions are the permissions that handlers decide with
	// Check rather than that method rules declare, such as
	// "captures.read_all". Naming them here documents them next to the
	// roles, and keeps Warnings from flagging the roles that grant them.
	HandlerPermissions []string `koanf:"handler_permissions"`
	// ScopesGrant lets an OAuth scope grant the permission of the same
	// exact name ("captures.create"), in addition to roles. Wildcards do
	// not apply to scopes.
	ScopesGrant bool `koanf:"scopes_grant"`
	// ConditionCostLimit bounds the CEL cost of evaluating one condition;
	// an evaluation that exceeds it denies. Zero means
	// DefaultConditionCostLimit.
	ConditionCostLimit uint64 `koanf:"condition_cost_limit" default:"1000"`
	// DecisionLogLevel is the level at which every decision is logged:
	// debug, info, warn or error. Empty (the default) logs the allows of
	// calls at debug, their denies at info, and the decisions of Check in
	// handlers at debug.
	DecisionLogLevel string `koanf:"decision_log_level" validate:"omitempty,oneof=debug info warn error"`
	// DenyLogRate bounds the deny lines logged a second (with a burst of
	// twice as many), so a client retrying a forbidden call cannot flood
	// the log; the next line logged says how many were dropped. Zero means
	// DefaultDenyLogRate; a negative rate logs every deny. Counters and
	// spans record every decision either way.
	DenyLogRate float64 `koanf:"deny_log_rate" default:"10"`
}

// Rule is an access rule in the shape of the loam.options.v1.access
// option: exactly one of Public, Authenticated or Permission, and an
// optional CEL Condition (not with Public).
type Rule struct {
	// Public admits every caller, authenticated or not.
	Public bool `koanf:"public"`
	// Authenticated admits any authenticated caller.
	Authenticated bool `koanf:"authenticated"`
	// Permission admits callers whose roles (or, with
	// Config.ScopesGrant, scopes) grant it, such as "captures.create".
	Permission string `koanf:"permission"`
	// Condition is a CEL expression over principal (and request) that must
	// also be true.
	Condition string `koanf:"condition"`
}

// String describes r as "public", "authenticated" or "permission
// captures.create", followed by " if <condition>" when it has one.
func (r Rule) String() string {
	s := "no rule"
	switch {
	case r.Public:
		s = "public"
	case r.Authenticated:
		s = "authenticated"
	case r.Permission != "":
		s = "permission " + r.Permission
	}
	if r.Condition != "" {
		s += " if " + r.Condition
	}
	return s
}

// problem returns what is wrong with r, or "".
func (r Rule) problem() string {
	n := 0
	for _, set := range []bool{r.Public, r.Authenticated, r.Permission != ""} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return "set exactly one of public, authenticated or permission"
	case r.Permission != "" && !policy.ValidPermission(r.Permission):
		return fmt.Sprintf("permission %q must be dot-separated lower-case segments, resource first, such as \"captures.create\"", r.Permission)
	case r.Public && r.Condition != "":
		return "a public method has no principal, so it cannot have a condition"
	}
	return ""
}

// Validate reports every problem of c, joined, each naming its key
// relative to the section ("roles.viewer[0]: ...", "rules./a.B/C: ...").
// All wrap ErrInvalidConfig. It does not compile conditions: New does,
// against the request types.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if _, err := policyOf(c.Roles); err != nil {
		errs = append(errs, err)
	}
	for _, m := range slices.Sorted(maps.Keys(c.Rules)) {
		if !validMethodName(m) {
			bad("rules."+m, "is not a full method name of the form /pkg.Service/Method or /pkg.Service/*")
		}
		if p := c.Rules[m].problem(); p != "" {
			bad("rules."+m, "%s", p)
		}
	}
	for i, p := range c.HandlerPermissions {
		if !policy.ValidPermission(p) {
			bad(fmt.Sprintf("handler_permissions[%d]", i), "%q is not a permission such as \"captures.read_all\"", p)
		}
	}
	if _, err := logLevel(c.DecisionLogLevel); err != nil {
		bad("decision_log_level", "%v", err)
	}
	return errors.Join(errs...)
}

// policyOf compiles roles; its errors wrap ErrInvalidConfig and name the
// role.
func policyOf(roles map[string][]string) (*policy.Policy, error) {
	p, err := policy.New(roles)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return p, nil
}

func validMethodName(m string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	return strings.HasPrefix(m, "/") && ok && svc != "" && method != "" && !strings.Contains(method, "/") &&
		(method == "*" || !strings.Contains(method, "*"))
}

// logLevel parses Config.DecisionLogLevel ("" reads as info).
func logLevel(s string) (slog.Level, error) {
	switch s {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// CheckCondition compiles and type-checks the CEL condition expr exactly as
// New does for a method whose request message is request (nil for a
// method without a descriptor, where request is dyn), and returns what is
// wrong with it, or nil. Tools that check contracts before a server runs,
// such as a buf lint rule, use it so that they accept exactly what the
// server will.
func CheckCondition(expr string, request protoreflect.MessageDescriptor) error {
	var files []protoreflect.FileDescriptor
	if request != nil {
		files = append(files, request.ParentFile())
	}
	env, err := condition.NewEnv(files, DefaultConditionCostLimit)
	if err != nil {
		return fmt.Errorf("authz: CEL environment: %w", err)
	}
	if _, err := env.Compile(expr, request); err != nil {
		return err
	}
	return nil
}
