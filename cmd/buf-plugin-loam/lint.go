package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"buf.build/go/bufplugin/check"
	"buf.build/go/bufplugin/check/checkutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/proto/loam/options"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

// Lint rule IDs.
const (
	ruleRPCAccess        = "LOAM_RPC_ACCESS"
	rulePermissionFormat = "LOAM_PERMISSION_FORMAT"
	ruleConditionCompile = "LOAM_CONDITION_COMPILES"
	ruleServiceOwner     = "LOAM_SERVICE_OWNER"
	ruleServiceOption    = "LOAM_SERVICE_OPTION_VALID"
	ruleEventDeclared    = "LOAM_EVENT_DECLARED"
	ruleEventType        = "LOAM_EVENT_TYPE"
	ruleEventKeyField    = "LOAM_EVENT_KEY_FIELD"
)

var lintRules = []*check.RuleSpec{
	{
		ID:      ruleRPCAccess,
		Purpose: "Checks that every RPC declares a loam.options.v1.access rule that sets exactly one of public, authenticated and permission.",
		Handler: checkutil.NewMethodRuleHandler(checkAccess(func(f protoreflect.Name) bool { return f != "permission" }), checkutil.WithoutImports()),
	},
	{
		ID:      rulePermissionFormat,
		Purpose: "Checks that every access permission is lower-case domain.action, such as captures.create.",
		Handler: checkutil.NewMethodRuleHandler(checkAccess(func(f protoreflect.Name) bool { return f == "permission" }), checkutil.WithoutImports()),
	},
	{
		ID:      ruleConditionCompile,
		Purpose: "Checks that every access condition compiles and type-checks against the request, with the checker the server runs at start-up.",
		Handler: checkutil.NewMethodRuleHandler(checkCondition, checkutil.WithoutImports()),
	},
	{
		ID:      ruleServiceOwner,
		Purpose: "Checks that every service declares the loam.options.v1.service option with an owner.",
		Handler: checkutil.NewServiceRuleHandler(checkService(func(err error, f protoreflect.Name) bool {
			return errors.Is(err, options.ErrNotDeclared) || f == "owner"
		}), checkutil.WithoutImports()),
	},
	{
		ID:      ruleServiceOption,
		Purpose: "Checks that the tier, links and event types of every loam.options.v1.service option are valid.",
		Handler: checkutil.NewServiceRuleHandler(checkService(func(err error, f protoreflect.Name) bool {
			return !errors.Is(err, options.ErrNotDeclared) && f != "owner"
		}), checkutil.WithoutImports()),
	},
	{
		ID:      ruleEventDeclared,
		Purpose: "Checks that every event type a service publishes or consumes is declared by exactly one message with the loam.options.v1.event option, in the module or its imports.",
		Handler: check.RuleHandlerFunc(checkEventsDeclared),
	},
	{
		ID:      ruleEventType,
		Purpose: "Checks that every event has a CloudEvents type in reverse-DNS form that no other event declares.",
		Handler: check.RuleHandlerFunc(checkEventTypes),
	},
	{
		ID:      ruleEventKeyField,
		Purpose: "Checks that the key_field of every event names a singular string or integer field of its message.",
		Handler: checkutil.NewMessageRuleHandler(checkKeyField, checkutil.WithoutImports()),
	},
}

// checkAccess reports the problems of a method's access rule, as
// options.Access finds them, whose field mine selects.
func checkAccess(mine func(field protoreflect.Name) bool) func(context.Context, check.ResponseWriter, check.Request, protoreflect.MethodDescriptor) error {
	return func(_ context.Context, w check.ResponseWriter, _ check.Request, md protoreflect.MethodDescriptor) error {
		_, err := options.Access(md)
		var oerr *options.Error
		if errors.As(err, &oerr) && mine(oerr.Field) {
			reason := oerr.Reason
			if errors.Is(err, options.ErrNotDeclared) {
				reason = "no access rule, so a Loam server refuses to start with it; " +
					"set (loam.options.v1.access) to public, authenticated or a permission"
			}
			annotate(w, md, optionsv1.E_Access, oerr.Field, -1, "RPC %s: %s.", md.Name(), reason)
		}
		return nil
	}
}

// checkCondition type-checks a method's CEL condition with authz, which
// the server uses at start-up, against the method's request.
func checkCondition(_ context.Context, w check.ResponseWriter, _ check.Request, md protoreflect.MethodDescriptor) error {
	a := declared[*optionsv1.Access](md.Options(), optionsv1.E_Access)
	if a == nil || a.GetCondition() == "" || a.GetPublic() {
		return nil // no condition, or a public one, which LOAM_RPC_ACCESS reports
	}
	if err := authz.CheckCondition(a.GetCondition(), md.Input()); err != nil {
		annotate(w, md, optionsv1.E_Access, "condition", -1, "RPC %s: condition %q does not compile against %s: %s",
			md.Name(), a.GetCondition(), md.Input().FullName(), celProblems(err.Error()))
	}
	return nil
}

// checkService reports the problems of a service's option, as
// options.Service finds them, that mine selects.
func checkService(mine func(err error, field protoreflect.Name) bool) func(context.Context, check.ResponseWriter, check.Request, protoreflect.ServiceDescriptor) error {
	return func(_ context.Context, w check.ResponseWriter, _ check.Request, sd protoreflect.ServiceDescriptor) error {
		_, err := options.Service(sd)
		var oerr *options.Error
		if errors.As(err, &oerr) && mine(err, oerr.Field) {
			reason := oerr.Reason
			if errors.Is(err, options.ErrNotDeclared) {
				reason = "no (loam.options.v1.service) option; declare one that names at least the owner team"
			}
			annotate(w, sd, optionsv1.E_Service, oerr.Field, -1, "Service %s: %s.", sd.Name(), reason)
		}
		return nil
	}
}

// checkKeyField reports an event's key_field that options.Event rejects.
func checkKeyField(_ context.Context, w check.ResponseWriter, _ check.Request, m protoreflect.MessageDescriptor) error {
	_, err := options.Event(m)
	if oerr := (*options.Error)(nil); errors.As(err, &oerr) && oerr.Field == "key_field" {
		annotate(w, m, optionsv1.E_Event, "key_field", -1, "Event %s: %s.", m.Name(), oerr.Reason)
	}
	return nil
}

// checkEventTypes reports, in the files being linted, event types that
// options.Event rejects, and types that another message of the request,
// imports included, declares too.
func checkEventTypes(_ context.Context, w check.ResponseWriter, req check.Request) error {
	byType := eventsByType(req)
	for _, m := range eventMessages(req, false) {
		_, err := options.Event(m)
		if oerr := (*options.Error)(nil); errors.As(err, &oerr) && oerr.Field == "type" {
			annotate(w, m, optionsv1.E_Event, "type", -1, "Event %s: %s.", m.Name(), oerr.Reason)
			continue
		}
		typ := declared[*optionsv1.Event](m.Options(), optionsv1.E_Event).GetType()
		if others := byType[typ]; len(others) > 1 {
			annotate(w, m, optionsv1.E_Event, "type", -1, "Event type %q is declared by %s: a type names one message, so that consumers know what to decode.",
				typ, names(others))
		}
	}
	return nil
}

// checkEventsDeclared reports every event type that a service of the
// files being linted publishes or consumes and that no message of the
// request, imports included, declares, or that several do.
func checkEventsDeclared(_ context.Context, w check.ResponseWriter, req check.Request) error {
	byType := eventsByType(req)
	for _, f := range req.FileDescriptors() {
		if f.IsImport() {
			continue
		}
		services := f.ProtoreflectFileDescriptor().Services()
		for i := range services.Len() {
			sd := services.Get(i)
			svc := declared[*optionsv1.Service](sd.Options(), optionsv1.E_Service)
			for _, list := range []struct {
				field protoreflect.Name
				types []string
			}{{"publishes", svc.GetPublishes()}, {"consumes", svc.GetConsumes()}} {
				for j, typ := range list.types {
					switch msgs := byType[typ]; len(msgs) {
					case 0:
						annotate(w, sd, optionsv1.E_Service, list.field, j,
							"Service %s %s %q, but no message declares it with the (loam.options.v1.event) option: declare it, or import the contract that does.",
							sd.Name(), list.field, typ)
					case 1:
					default:
						annotate(w, sd, optionsv1.E_Service, list.field, j,
							"Service %s %s %q, which %s declare: a type names one message.", sd.Name(), list.field, typ, names(msgs))
					}
				}
			}
		}
	}
	return nil
}

// eventsByType indexes the messages of every file of the request, imports
// included, that declare an event option, by their type as written.
func eventsByType(req check.Request) map[string][]protoreflect.MessageDescriptor {
	byType := map[string][]protoreflect.MessageDescriptor{}
	for _, m := range eventMessages(req, true) {
		typ := declared[*optionsv1.Event](m.Options(), optionsv1.E_Event).GetType()
		byType[typ] = append(byType[typ], m)
	}
	return byType
}

// eventMessages returns the messages, nested ones included, that declare
// an event option, in the files of the request (with imports, or only
// those being checked).
func eventMessages(req check.Request, imports bool) []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	var walk func(protoreflect.MessageDescriptors)
	walk = func(msgs protoreflect.MessageDescriptors) {
		for i := range msgs.Len() {
			m := msgs.Get(i)
			if declared[*optionsv1.Event](m.Options(), optionsv1.E_Event) != nil {
				out = append(out, m)
			}
			walk(m.Messages())
		}
	}
	for _, f := range req.FileDescriptors() {
		if imports || !f.IsImport() {
			walk(f.ProtoreflectFileDescriptor().Messages())
		}
	}
	return out
}

// declared returns the extension xt of opts as written, or nil when it is
// not set.
func declared[T proto.Message](opts proto.Message, xt protoreflect.ExtensionType) T {
	var zero T
	if opts == nil || !proto.HasExtension(opts, xt) {
		return zero
	}
	v, _ := proto.GetExtension(opts, xt).(T)
	return v
}

// names lists the full names of msgs, sorted, as "a, b and c".
func names(msgs []protoreflect.MessageDescriptor) string {
	set := map[string]bool{}
	for _, m := range msgs {
		set[string(m.FullName())] = true
	}
	list := slices.Sorted(maps.Keys(set))
	if len(list) == 1 {
		return list[0]
	}
	return strings.Join(list[:len(list)-1], ", ") + " and " + list[len(list)-1]
}

// celProblems turns CEL's report, one "ERROR: <input>:1:8: message" line
// per problem followed by the expression and a caret, into one line:
// "1:8: message".
func celProblems(s string) string {
	var parts []string
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "|") {
			continue
		}
		line = strings.TrimPrefix(line, "ERROR: ")
		parts = append(parts, strings.TrimPrefix(line, "<input>:"))
	}
	return strings.TrimSuffix(strings.Join(parts, "; "), ".") + "."
}

// annotate adds an annotation at the option xt of d, or at its field when
// field is set (and at element index of a repeated field when index is not
// negative).
func annotate(w check.ResponseWriter, d protoreflect.Descriptor, xt protoreflect.ExtensionType, field protoreflect.Name, index int, format string, args ...any) {
	w.AddAnnotation(check.WithMessage(fmt.Sprintf(format, args...)), at(d, xt, field, index))
}

// at locates the option xt of d, or its field (and element index), in d's
// file; or d itself when d does not declare the option or its file carries
// no source locations.
func at(d protoreflect.Descriptor, xt protoreflect.ExtensionType, field protoreflect.Name, index int) check.AddAnnotationOption {
	if path, ok := optionPath(d, xt, field, index); ok {
		return check.WithFileNameAndSourcePath(d.ParentFile().Path(), path)
	}
	return check.WithDescriptor(d)
}

// againstAt is at for the previous version of a contract.
func againstAt(d protoreflect.Descriptor, xt protoreflect.ExtensionType, field protoreflect.Name) check.AddAnnotationOption {
	if path, ok := optionPath(d, xt, field, -1); ok {
		return check.WithAgainstFileNameAndSourcePath(d.ParentFile().Path(), path)
	}
	return check.WithAgainstDescriptor(d)
}

// optionPath returns the source path of the option xt of d, or of its
// field (and element index): the path of d followed by the options field,
// the extension's number and the field's. ok is false when d does not
// declare the option or its file has no source locations.
func optionPath(d protoreflect.Descriptor, xt protoreflect.ExtensionType, field protoreflect.Name, index int) (protoreflect.SourcePath, bool) {
	loc := d.ParentFile().SourceLocations().ByDescriptor(d)
	if len(loc.Path) == 0 || !proto.HasExtension(d.Options(), xt) {
		return nil, false
	}
	// The number of the options field of each kind of descriptor in
	// descriptor.proto.
	var optsField int32
	switch d.(type) {
	case protoreflect.MethodDescriptor:
		optsField = 4
	case protoreflect.ServiceDescriptor:
		optsField = 3
	case protoreflect.MessageDescriptor:
		optsField = 7
	default:
		return nil, false
	}
	xd := xt.TypeDescriptor()
	path := append(slices.Clone(loc.Path), optsField, int32(xd.Number()))
	if field != "" {
		if fd := xd.Message().Fields().ByName(field); fd != nil {
			path = append(path, int32(fd.Number()))
			if index >= 0 {
				path = append(path, int32(index))
			}
		}
	}
	return path, true
}
