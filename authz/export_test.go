package authz

import (
	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz/internal/condition"
)

// CompiledCondition returns the cel-go program of fullMethod's condition
// and an activation over req and p, so benchmarks can evaluate the very
// program the Authorizer evaluates, directly.
func CompiledCondition(a *Authorizer, fullMethod string, req any, p *authn.Principal) (cel.Program, interpreter.Activation) {
	return a.methods[fullMethod].cond.CELProgram(), condition.NewActivation(req, p)
}
