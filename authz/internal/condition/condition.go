// Package condition compiles and evaluates the CEL conditions of access
// rules. An Env knows the request message types and the principal type;
// a Program is one type-checked condition, safe for concurrent use.
package condition

import (
	"errors"
	"fmt"
	"reflect"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/authn"
)

// PrincipalType is the CEL type name of the principal variable.
const PrincipalType = "loam.authz.Principal"

var principalType = types.NewObjectType(PrincipalType, traits.FieldTesterType, traits.IndexerType)

// field is one field of the CEL principal.
type field struct {
	typ *types.Type
	get func(*authn.Principal) any
	set func(*authn.Principal) bool
}

func stringField(f func(*authn.Principal) string) field {
	return field{typ: types.StringType, get: func(p *authn.Principal) any { return f(p) }, set: func(p *authn.Principal) bool { return f(p) != "" }}
}

func listField(f func(*authn.Principal) authn.Strings) field {
	return field{typ: types.NewListType(types.StringType), get: func(p *authn.Principal) any { return f(p).Clone() }, set: func(p *authn.Principal) bool { return f(p).Len() > 0 }}
}

// fields are the principal's CEL fields. claims decodes the token's
// payload on every evaluation that reads it; an mTLS principal has none.
var fields = map[string]field{
	"subject":   stringField(func(p *authn.Principal) string { return p.Subject() }),
	"issuer":    stringField(func(p *authn.Principal) string { return p.Issuer() }),
	"client_id": stringField(func(p *authn.Principal) string { return p.ClientID() }),
	"audiences": listField(func(p *authn.Principal) authn.Strings { return p.Audiences() }),
	"scopes":    listField(func(p *authn.Principal) authn.Strings { return p.Scopes() }),
	"roles":     listField(func(p *authn.Principal) authn.Strings { return p.Roles() }),
	"groups":    listField(func(p *authn.Principal) authn.Strings { return p.Groups() }),
	"claims": {
		typ: types.NewMapType(types.StringType, types.DynType),
		get: func(p *authn.Principal) any {
			var m map[string]any
			if p.Claims(&m) != nil || m == nil {
				return map[string]any{}
			}
			return m
		},
		set: func(p *authn.Principal) bool { return true },
	},
}

// provider adds the principal type to a protobuf type registry.
type provider struct {
	*types.Registry
	fieldTypes map[string]*types.FieldType
	names      []string
}

func newProvider(reg *types.Registry) *provider {
	p := &provider{Registry: reg, fieldTypes: map[string]*types.FieldType{}}
	for name, f := range fields {
		p.names = append(p.names, name)
		p.fieldTypes[name] = &types.FieldType{
			Type:    f.typ,
			IsSet:   func(target any) bool { pr := principalOf(target); return pr != nil && f.set(pr) },
			GetFrom: func(target any) (any, error) { return getField(principalOf(target), f) },
		}
	}
	return p
}

func principalOf(target any) *authn.Principal {
	switch v := target.(type) {
	case *authn.Principal:
		return v
	case principal:
		return v.p
	}
	return nil
}

func getField(p *authn.Principal, f field) (any, error) {
	if p == nil {
		return nil, errors.New("no principal")
	}
	return f.get(p), nil
}

func (p *provider) FindStructType(name string) (*types.Type, bool) {
	if name == PrincipalType {
		return types.NewTypeTypeWithParam(principalType), true
	}
	return p.Registry.FindStructType(name)
}

func (p *provider) FindStructFieldNames(name string) ([]string, bool) {
	if name == PrincipalType {
		return p.names, true
	}
	return p.Registry.FindStructFieldNames(name)
}

func (p *provider) FindStructFieldType(name, fieldName string) (*types.FieldType, bool) {
	if name == PrincipalType {
		ft, ok := p.fieldTypes[fieldName]
		return ft, ok
	}
	return p.Registry.FindStructFieldType(name, fieldName)
}

func (p *provider) NativeToValue(v any) ref.Val {
	if pr, ok := v.(*authn.Principal); ok {
		return principal{p: pr, adapter: p}
	}
	return p.Registry.NativeToValue(v)
}

// principal is the CEL value of an *authn.Principal.
type principal struct {
	p       *authn.Principal
	adapter types.Adapter
}

func (v principal) ConvertToNative(t reflect.Type) (any, error) {
	if reflect.TypeOf(v.p).AssignableTo(t) {
		return v.p, nil
	}
	return nil, fmt.Errorf("cannot convert %s to %v", PrincipalType, t)
}

func (v principal) ConvertToType(t ref.Type) ref.Val {
	switch t.TypeName() {
	case PrincipalType:
		return v
	case types.TypeType.TypeName():
		return principalType
	}
	return types.NewErr("cannot convert %s to %s", PrincipalType, t.TypeName())
}

func (v principal) Equal(other ref.Val) ref.Val {
	o, ok := other.(principal)
	return types.Bool(ok && o.p == v.p)
}

func (v principal) Type() ref.Type { return principalType }
func (v principal) Value() any     { return v.p }

// Get returns a field by name, for dynamic access.
func (v principal) Get(index ref.Val) ref.Val {
	f, ok := fields[string(stringOf(index))]
	if !ok {
		return types.NewErr("no such field: %v", index)
	}
	val, err := getField(v.p, f)
	if err != nil {
		return types.WrapErr(err)
	}
	return v.adapter.NativeToValue(val)
}

// IsSet reports whether a field is set, for has().
func (v principal) IsSet(index ref.Val) ref.Val {
	f, ok := fields[string(stringOf(index))]
	if !ok {
		return types.NewErr("no such field: %v", index)
	}
	return types.Bool(v.p != nil && f.set(v.p))
}

func stringOf(v ref.Val) types.String {
	s, _ := v.(types.String)
	return s
}

// Env compiles conditions. It is not safe for concurrent use while
// compiling; Programs are.
type Env struct {
	base      *cel.Env
	costLimit uint64
}

// NewEnv returns an Env that knows the messages of files (and of the files
// they import) and evaluates with costLimit.
func NewEnv(files []protoreflect.FileDescriptor, costLimit uint64) (*Env, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.Path()] {
			continue
		}
		seen[f.Path()] = true
		if err := reg.RegisterDescriptor(f); err != nil {
			return nil, fmt.Errorf("register %s: %w", f.Path(), err)
		}
	}
	prov := newProvider(reg)
	base, err := cel.NewEnv(
		cel.CustomTypeAdapter(prov),
		cel.CustomTypeProvider(prov),
		cel.Variable("principal", cel.ObjectType(PrincipalType)),
	)
	if err != nil {
		return nil, err
	}
	return &Env{base: base, costLimit: costLimit}, nil
}

// Program is a compiled condition. It is safe for concurrent use.
type Program struct {
	prg cel.Program
}

// Compile parses and type-checks src with request of type input, or dyn
// when input is nil. The expression must be a bool.
func (e *Env) Compile(src string, input protoreflect.MessageDescriptor) (*Program, error) {
	reqType := cel.DynType
	if input != nil {
		reqType = cel.ObjectType(string(input.FullName()))
	}
	env, err := e.base.Extend(cel.Variable("request", reqType))
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, fmt.Errorf("the condition is of type %s, not bool", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(e.costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	return &Program{prg: prg}, nil
}

// Eval evaluates the condition with req as request and p as principal.
// An error, a result other than a bool, or exceeding the cost limit is
// returned as an error.
func (p *Program) Eval(req any, pr *authn.Principal) (bool, error) {
	act := activations.Get().(*activation)
	act.req, act.p = req, pr
	out, _, err := p.prg.Eval(act)
	act.req, act.p = nil, nil
	activations.Put(act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("result %v is not a bool", out)
	}
	return bool(b), nil
}

// CELProgram returns the compiled cel-go program, for benchmarks.
func (p *Program) CELProgram() cel.Program { return p.prg }

// NewActivation returns the activation that Eval builds, for benchmarks.
func NewActivation(req any, pr *authn.Principal) interpreter.Activation {
	return &activation{req: req, p: pr}
}

var activations = sync.Pool{New: func() any { return new(activation) }}

// activation resolves the two variables of a condition without a map.
type activation struct {
	req any
	p   *authn.Principal
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "request":
		return a.req, true
	case "principal":
		return a.p, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }
