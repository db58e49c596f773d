package authz

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz/internal/policy"
)

// Reason says why a decision was made. Its String is a short stable code,
// used as the "reason" attribute of the loam.authz.decisions counter and
// the loam.authz.reason span attribute. The zero Reason is ReasonNoRule, so
// a zero Decision denies.
type Reason uint8

// Reasons. The first four allow, the others deny.
const (
	// ReasonNoRule: the method is unknown to the Authorizer (it was not in
	// the services given to New), so it has no rule. Denies.
	ReasonNoRule Reason = iota
	// ReasonUnauthenticated: the rule needs a principal and there is none.
	// Denies with codes.Unauthenticated.
	ReasonUnauthenticated
	// ReasonNotGranted: no role (nor, with Config.ScopesGrant, scope) of
	// the principal grants the permission. Denies.
	ReasonNotGranted
	// ReasonConditionFalse: the condition evaluated to false. Denies.
	ReasonConditionFalse
	// ReasonConditionError: evaluating the condition failed or exceeded
	// Config.ConditionCostLimit; Decision.Err says how. Denies.
	ReasonConditionError
	// ReasonExempt: a gRPC health or reflection method without a config
	// rule. Allows.
	ReasonExempt
	// ReasonPublic: the rule is public. Allows.
	ReasonPublic
	// ReasonAuthenticated: the rule is authenticated, there is a principal
	// and the condition, if any, held. Allows.
	ReasonAuthenticated
	// ReasonGranted: the permission is granted and the condition, if any,
	// held. Allows.
	ReasonGranted

	numReasons
)

var reasonNames = [numReasons]string{
	"no_rule", "unauthenticated", "not_granted", "condition_false", "condition_error",
	"exempt", "public", "authenticated", "granted",
}

// String returns the reason's code, such as "not_granted".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

func (r Reason) allows() bool { return r >= ReasonExempt }

// Decision is the outcome of an authorization decision and why.
type Decision struct {
	// Allowed says whether the call (or the Check) may proceed.
	Allowed bool
	// Reason is why.
	Reason Reason
	// Method is the full method name; empty for Check.
	Method string
	// Rule is the rule applied; its zero value when there is none.
	Rule Rule
	// Source is where the rule came from: "proto", "config", or "" for
	// exempt methods, Check and unknown methods.
	Source string
	// Permission is the permission required, if any.
	Permission string
	// Role is the principal's role that granted Permission, if one did.
	Role string
	// Scope is the principal's scope that granted Permission, when a
	// scope did (Config.ScopesGrant) and no role.
	Scope string
	// Condition is the CEL condition evaluated, if any; its outcome is
	// ReasonConditionFalse, ReasonConditionError or an allowing Reason.
	Condition string
	// Err is the evaluation error of the condition (ReasonConditionError).
	Err error
}

// String describes d in one line, for logs and the CLI, such as
// "allow /captures.v1.CaptureService/CreateCapture: granted: permission
// captures.create by role editor; condition true".
func (d Decision) String() string {
	var b strings.Builder
	b.WriteString("deny")
	if d.Allowed {
		b.Reset()
		b.WriteString("allow")
	}
	if d.Method != "" {
		b.WriteString(" " + d.Method)
	}
	b.WriteString(": " + d.Reason.String())
	if d.Permission != "" {
		b.WriteString(": permission " + d.Permission)
		switch {
		case d.Role != "":
			b.WriteString(" by role " + d.Role)
		case d.Scope != "":
			b.WriteString(" by scope " + d.Scope)
		}
	}
	switch {
	case d.Condition == "":
	case d.Err != nil:
		fmt.Fprintf(&b, "; condition failed: %v", d.Err)
	case d.Reason == ReasonConditionFalse:
		b.WriteString("; condition false")
	case d.Allowed:
		b.WriteString("; condition true")
	}
	return b.String()
}

// status is what the caller learns of a denial.
func (d *Decision) status() *status.Status {
	if d.Reason == ReasonUnauthenticated {
		return unauthenticated
	}
	return permissionDenied
}

// decideRule applies m's rule to p, without its condition: the part of
// a decision that needs no request.
func (a *Authorizer) decideRule(m *method, p *authn.Principal) Decision {
	d := Decision{Method: m.name, Rule: m.rule, Source: m.source, Permission: m.rule.Permission, Condition: m.rule.Condition}
	switch {
	case m.exempt:
		d.Reason = ReasonExempt
	case m.rule.Public:
		d.Reason = ReasonPublic
	case p == nil:
		d.Reason = ReasonUnauthenticated
	case m.rule.Authenticated:
		d.Reason = ReasonAuthenticated
	default:
		role, ok := a.policy.Load().table.Grant(m.perm, p.Roles())
		a.grant(&d, p, role, ok)
	}
	d.Allowed = d.Reason.allows()
	return d
}

// grant sets d's Reason, Role and Scope for d.Permission, given whether
// role grants it.
func (a *Authorizer) grant(d *Decision, p *authn.Principal, role string, ok bool) {
	switch {
	case ok:
		d.Reason, d.Role = ReasonGranted, role
	case a.scopesGrant && p.Scopes().Contains(d.Permission):
		d.Reason, d.Scope = ReasonGranted, d.Permission
	default:
		d.Reason = ReasonNotGranted
	}
}

// evalCondition evaluates m's condition over req and p when d allows so
// far, and updates d.
func (m *method) evalCondition(d *Decision, req any, p *authn.Principal) {
	if m.cond == nil || !d.Allowed {
		return
	}
	ok, err := m.cond.Eval(req, p)
	switch {
	case err != nil:
		d.Reason, d.Err = ReasonConditionError, err
	case !ok:
		d.Reason = ReasonConditionFalse
	}
	d.Allowed = d.Reason.allows()
}

// Explain decides whether p may call fullMethod with req, exactly as the
// interceptors would, and says why, without logging or counting. p may be
// nil (no principal). A nil req stands for an empty request message of the
// method's type (or a null request for methods without a descriptor). It
// is safe for concurrent use.
func (a *Authorizer) Explain(p *authn.Principal, fullMethod string, req proto.Message) Decision {
	m := a.methods[fullMethod]
	if m == nil {
		return Decision{Method: fullMethod}
	}
	d := a.decideRule(m, p)
	var r any = req
	if req == nil && m.input != nil {
		r = dynamicpb.NewMessage(m.input)
	}
	m.evalCondition(&d, r, p)
	return d
}

type authorizerKey struct{}

// NewContext returns a copy of ctx that carries a, for Check. The
// interceptors do this for every call they admit; call it yourself only to
// test a handler without them.
func NewContext(ctx context.Context, a *Authorizer) context.Context {
	return context.WithValue(ctx, authorizerKey{}, a)
}

// Check decides whether the principal of ctx (authn.FromContext) holds
// permission, with the Authorizer that the interceptors put in ctx and its
// current role policy (and scopes, with Config.ScopesGrant). Use it in a
// handler for decisions about a particular resource. The decision is
// logged and counted like the interceptors', and added to the span as a
// "loam.authz.check" event.
//
// It returns nil when permission is granted. Otherwise the error matches
// ErrUnauthenticated (no principal) or ErrPermissionDenied (not granted,
// or a malformed permission), and a handler may return it as is: grpc-go
// sends the caller only codes.Unauthenticated or codes.PermissionDenied
// with a generic message. Without an Authorizer in ctx it returns
// ErrNoAuthorizer.
func Check(ctx context.Context, permission string) error {
	a, _ := ctx.Value(authorizerKey{}).(*Authorizer)
	if a == nil {
		return ErrNoAuthorizer
	}
	p, _ := authn.FromContext(ctx)
	d := Decision{Permission: permission, Rule: Rule{Permission: permission}, Reason: ReasonUnauthenticated}
	switch {
	case p == nil:
	case !policy.ValidPermission(permission):
		d.Reason = ReasonNotGranted
	default:
		role, ok := a.policy.Load().Grant(p.Roles(), permission)
		a.grant(&d, p, role, ok)
	}
	d.Allowed = d.Reason.allows()
	a.record(ctx, &d, p, true)
	if d.Allowed {
		return nil
	}
	return &deniedError{d: d}
}
