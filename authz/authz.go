package authz

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/time/rate"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/authz/internal/condition"
	"github.com/loamhq/loam/authz/internal/policy"
	protooptions "github.com/loamhq/loam/proto/loam/options"
)

// exemptServices are always allowed unless Config.Rules names their
// methods: health checks and reflection carry no access option.
var exemptServices = map[string]bool{
	"grpc.health.v1.Health":                    true,
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
}

// Authorizer decides every call of a server against the access rules of
// its methods and the role policy, with UnaryInterceptor and
// StreamInterceptor, and in handlers with Check.
//
// It is safe for concurrent use, including SetPolicy during decisions. It
// holds no resources that need closing.
type Authorizer struct {
	methods     map[string]*method // by full method name; read-only after New
	declared    map[string]bool    // permissions that rules declare
	perms       []string           // the same, sorted; method.perm indexes it
	scopesGrant bool

	policy atomic.Pointer[policyState]

	log          *slog.Logger
	allowLevel   slog.Level
	denyLevel    slog.Level
	handlerLevel slog.Level
	denyLogs     *rate.Limiter // nil: every deny is logged
	suppressed   atomic.Int64  // deny lines dropped since the last one
	decisions    metric.Int64Counter
	attrs        [2][numReasons][]metric.AddOption // by source (call, handler) and reason
}

// policyState is a role policy and its warnings, swapped as one.
type policyState struct {
	*policy.Policy
	table    policy.Table // for perms
	warnings []string
}

// method is the compiled rule of one method.
type method struct {
	name   string
	rule   Rule
	source string // "proto", "config" or "" (exempt)
	exempt bool
	cond   *condition.Program
	input  protoreflect.MessageDescriptor // nil without a descriptor
	perm   int                            // index of rule.Permission in Authorizer.perms
}

// New compiles the access rule of every method of services, which is what
// (*grpc.Server).GetServiceInfo returns once the application has
// registered its services, and returns an Authorizer for them with the
// role policy cfg.Roles.
//
// A method's rule is its loam.options.v1.access option, read from its
// descriptor in protoregistry.GlobalFiles, or else cfg.Rules by full method
// name, or else cfg.Rules by the service's pattern "/pkg.Service/*" (which
// fills only the methods that have no rule of their own). Methods of grpc.health.v1.Health, grpc.reflection.v1.ServerReflection
// and grpc.reflection.v1alpha.ServerReflection are exempt (always allowed)
// unless cfg.Rules names them. Conditions are compiled and type-checked
// against the method's request message and the principal.
//
// New refuses to build an Authorizer, so that the server refuses to start,
// when cfg is invalid (ErrInvalidConfig), when a rule cannot be enforced
// (ErrInvalidRule; this includes a cfg.Rules entry that contradicts the
// proto rule or names no registered method), or when methods have no rule
// (ErrNoRule, one error listing every such method, sorted). All problems
// are reported at once, joined.
//
// Role entries that name a permission no rule declares are not errors:
// Warnings reports them, and New logs them at Warn.
//
// Options read: WithLogger, WithMeterProvider.
func New(cfg Config, services map[string]grpc.ServiceInfo, opts ...Option) (*Authorizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := newOptions(opts)
	a := &Authorizer{
		methods:      map[string]*method{},
		declared:     map[string]bool{},
		scopesGrant:  cfg.ScopesGrant,
		log:          o.logger,
		allowLevel:   slog.LevelDebug,
		denyLevel:    slog.LevelInfo,
		handlerLevel: slog.LevelDebug,
	}
	if cfg.DecisionLogLevel != "" {
		a.allowLevel, _ = logLevel(cfg.DecisionLogLevel)
		a.denyLevel, a.handlerLevel = a.allowLevel, a.allowLevel
	}
	switch r := cfg.DenyLogRate; {
	case r == 0:
		a.denyLogs = rate.NewLimiter(DefaultDenyLogRate, 2*int(DefaultDenyLogRate))
	case r > 0:
		a.denyLogs = rate.NewLimiter(rate.Limit(r), max(1, int(2*r)))
	}
	if err := a.compile(cfg, services); err != nil {
		return nil, err
	}
	if err := a.initMetrics(o.meters); err != nil {
		return nil, err
	}
	if err := a.SetPolicy(cfg.Roles); err != nil {
		return nil, err
	}
	return a, nil
}

// compile fills a.methods and a.declared.
func (a *Authorizer) compile(cfg Config, services map[string]grpc.ServiceInfo) error {
	var errs, missing []string
	bad := func(name, format string, args ...any) {
		errs = append(errs, name+": "+fmt.Sprintf(format, args...))
	}
	var files []protoreflect.FileDescriptor
	for _, svc := range slices.Sorted(maps.Keys(services)) {
		for _, mi := range services[svc].Methods {
			name := "/" + svc + "/" + mi.Name
			m := &method{name: name}
			md, _ := protooptions.FindMethod(name)
			proto, err := protoRule(md)
			if err != nil {
				bad(name, "%v", err)
				continue
			}
			cr, inConfig := cfg.Rules[name]
			if !inConfig && proto == nil {
				cr, inConfig = cfg.Rules["/"+svc+"/*"]
			}
			switch {
			case proto != nil && inConfig && cr != *proto:
				bad(name, "config rule %q contradicts the proto rule %q", cr, *proto)
				continue
			case proto != nil:
				m.rule, m.source = *proto, "proto"
			case inConfig:
				m.rule, m.source = cr, "config"
			case exemptServices[svc]:
				m.exempt = true
			default:
				missing = append(missing, name)
				continue
			}
			if md != nil {
				m.input = md.Input()
				files = append(files, md.Input().ParentFile())
			}
			if m.rule.Condition != "" && mi.IsClientStream {
				bad(name, "a condition cannot be enforced on a client-streaming method: check each message with authz.Check in the handler")
				continue
			}
			if m.rule.Permission != "" {
				a.declared[m.rule.Permission] = true
			}
			a.methods[name] = m
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Rules)) {
		if svc, ok := strings.CutSuffix(name, "/*"); ok {
			if _, registered := services[strings.TrimPrefix(svc, "/")]; !registered {
				bad("rules."+name, "no registered service has this name")
			}
			continue
		}
		if a.methods[name] == nil && !slices.Contains(missing, name) && !hasPrefix(errs, name+": ") {
			bad("rules."+name, "no registered method has this name")
		}
	}
	if err := a.compileConditions(cfg, files, bad); err != nil {
		return err
	}
	for _, p := range cfg.HandlerPermissions {
		a.declared[p] = true
	}
	a.perms = slices.Sorted(maps.Keys(a.declared))
	for _, m := range a.methods {
		m.perm, _ = slices.BinarySearch(a.perms, m.rule.Permission)
	}
	var all []error
	slices.Sort(errs)
	for _, e := range errs {
		all = append(all, fmt.Errorf("%w: %s", ErrInvalidRule, e))
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		all = append(all, fmt.Errorf("%w (declare option (loam.options.v1.access) or set authz.rules): %s", ErrNoRule, strings.Join(missing, ", ")))
	}
	return errors.Join(all...)
}

func hasPrefix(list []string, prefix string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// compileConditions compiles the condition of every method that has one.
func (a *Authorizer) compileConditions(cfg Config, files []protoreflect.FileDescriptor, bad func(string, string, ...any)) error {
	limit := cfg.ConditionCostLimit
	if limit == 0 {
		limit = DefaultConditionCostLimit
	}
	var env *condition.Env
	for _, name := range slices.Sorted(maps.Keys(a.methods)) {
		m := a.methods[name]
		if m.rule.Condition == "" {
			continue
		}
		if env == nil {
			var err error
			if env, err = condition.NewEnv(files, limit); err != nil {
				return fmt.Errorf("authz: CEL environment: %w", err)
			}
		}
		prg, err := env.Compile(m.rule.Condition, m.input)
		if err != nil {
			bad(name, "condition %q: %v", m.rule.Condition, err)
			delete(a.methods, name)
			continue
		}
		m.cond = prg
	}
	return nil
}

// protoRule returns the access rule md declares, nil when md is nil or
// declares none.
func protoRule(md protoreflect.MethodDescriptor) (*Rule, error) {
	if md == nil {
		return nil, nil
	}
	acc, err := protooptions.Access(md)
	if errors.Is(err, protooptions.ErrNotDeclared) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &Rule{
		Public:        acc.GetPublic(),
		Authenticated: acc.GetAuthenticated(),
		Permission:    acc.GetPermission(),
		Condition:     acc.GetCondition(),
	}, nil
}

// SetPolicy replaces the role policy (Config.Roles) for every decision
// that starts after it returns; decisions in flight finish with the policy
// they started with. It validates roles first: on an error (wrapping
// ErrInvalidConfig and naming each bad role entry) the current policy
// stays enforced. On success it replaces Warnings and logs them at Warn.
// It is safe for concurrent use; config.Watch can call it on every
// reload.
func (a *Authorizer) SetPolicy(roles map[string][]string) error {
	p, err := policyOf(roles)
	if err != nil {
		return err
	}
	st := &policyState{Policy: p, table: p.Table(a.perms), warnings: p.Flags(a.declared)}
	a.policy.Store(st)
	for _, w := range st.warnings {
		a.log.Warn("authz policy warning", slog.String("warning", w))
	}
	return nil
}

// Methods returns the full names of every method New compiled a rule for,
// exempt ones included, sorted: the methods the server serves.
func (a *Authorizer) Methods() []string {
	return slices.Sorted(maps.Keys(a.methods))
}

// PublicMethods returns the full names of the methods that admit callers
// without credentials, sorted: those whose rule is public, and the exempt
// health and reflection methods. Hand them to authn.WithPublicMethods, so
// authentication and authorization agree on what is public.
func (a *Authorizer) PublicMethods() []string {
	var out []string
	for name, m := range a.methods {
		if m.exempt || m.rule.Public {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Warnings returns what the current role policy grants that no rule
// declares: a permission no method rule names, a wildcard that matches
// none, and "*". A permission used only with Check appears here too.
// The slice is a copy.
func (a *Authorizer) Warnings() []string {
	return slices.Clone(a.policy.Load().warnings)
}
