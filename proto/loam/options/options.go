// Package options reads and checks Loam's protobuf options from descriptors.
//
// The options themselves are declared in loam/options/v1/options.proto and
// generated into package optionsv1 beside it. This package adds what every
// reader of those options needs and protobuf does not give: one call that
// returns the option of a method, service or message, already checked
// against the rules that the .proto file states in prose (exactly one access
// rule, a required owner, a key field that exists), and one error type that
// names the element and the option at fault.
//
// The Loam server and the authorization package read options through this
// package, so they agree on what is valid.
//
// # Errors
//
// Every error returned is an *Error. An option that is not declared at all
// unwraps to ErrNotDeclared, so callers can tell "missing" from "wrong" with
// errors.Is; Error.Field names the field of the option at fault, so that a
// tool can tell a malformed permission from a missing rule without reading
// the message.
//
// All functions are safe for concurrent use; they only read descriptors.
package options

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

// ErrNotDeclared is wrapped by the *Error returned when an element carries
// no Loam option of the kind asked for.
var ErrNotDeclared = errors.New("option not declared")

// Error reports an option that is missing or breaks its rules.
type Error struct {
	// Element is the full name of the method, service or message.
	Element protoreflect.FullName
	// Option is the full name of the option, such as "loam.options.v1.access".
	Option protoreflect.FullName
	// Field is the field of the option at fault, such as "permission",
	// "owner" or "key_field"; empty when the fault is the option as a
	// whole: not declared, or an access rule that sets no mode. Tools that
	// file each kind of problem under its own rule, such as a lint plugin,
	// tell them apart by it.
	Field protoreflect.Name
	// Reason says what is wrong, in words meant for the person who wrote the
	// .proto file.
	Reason string
	err    error
}

// Error returns "<element>: option (<option>): <reason>".
func (e *Error) Error() string {
	return fmt.Sprintf("%s: option (%s): %s", e.Element, e.Option, e.Reason)
}

// Unwrap returns ErrNotDeclared when the option is missing, and nil otherwise.
func (e *Error) Unwrap() error { return e.err }

var (
	// permissionPattern is "resource.action": two or more dot-separated
	// segments of lower-case letters, digits and underscores.
	permissionPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	// eventTypePattern is a CloudEvents type in reverse-DNS form: dotted
	// segments of letters, digits, underscores and hyphens, no spaces.
	eventTypePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)+$`)
)

// Access returns the checked access rule of method m.
//
// It fails with an *Error that wraps ErrNotDeclared when m has no rule, and
// with an *Error without it when the rule sets none of public,
// authenticated and permission, sets public or authenticated to false, has a
// malformed permission, or combines public with a condition.
func Access(m protoreflect.MethodDescriptor) (*optionsv1.Access, error) {
	a, ok := extension[*optionsv1.Access](m.Options(), optionsv1.E_Access)
	if !ok {
		return nil, notDeclared(m.FullName(), optionsv1.E_Access)
	}
	bad := func(field protoreflect.Name, format string, args ...any) (*optionsv1.Access, error) {
		return nil, &Error{Element: m.FullName(), Option: optionsv1.E_Access.TypeDescriptor().FullName(), Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch r := a.GetRule().(type) {
	case nil:
		return bad("", "set exactly one of public, authenticated or permission")
	case *optionsv1.Access_Public:
		if !r.Public {
			return bad("public", "public must be true when set; to require a caller use authenticated or permission")
		}
		if a.GetCondition() != "" {
			return bad("condition", "a public method has no principal, so it cannot have a condition")
		}
	case *optionsv1.Access_Authenticated:
		if !r.Authenticated {
			return bad("authenticated", "authenticated must be true when set; to admit anybody use public: true")
		}
	case *optionsv1.Access_Permission:
		if !permissionPattern.MatchString(r.Permission) {
			return bad("permission", "permission %q must be dot-separated lower-case segments, resource first, such as \"captures.create\"", r.Permission)
		}
	}
	return a, nil
}

// Service returns the checked service option of s.
//
// It fails with an *Error that wraps ErrNotDeclared when s has none, and
// with an *Error without it when the owner is empty, the tier is not a
// known value, a link is not an absolute http or https URL, or an event type
// in publishes or consumes is malformed or listed twice.
func Service(s protoreflect.ServiceDescriptor) (*optionsv1.Service, error) {
	svc, ok := extension[*optionsv1.Service](s.Options(), optionsv1.E_Service)
	if !ok {
		return nil, notDeclared(s.FullName(), optionsv1.E_Service)
	}
	bad := func(field protoreflect.Name, format string, args ...any) (*optionsv1.Service, error) {
		return nil, &Error{Element: s.FullName(), Option: optionsv1.E_Service.TypeDescriptor().FullName(), Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if svc.GetOwner() == "" {
		return bad("owner", "owner is required: name the team that owns the service")
	}
	if optionsv1.Tier_name[int32(svc.GetTier())] == "" {
		return bad("tier", "tier %d is not a known loam.options.v1.Tier", svc.GetTier())
	}
	for _, link := range []struct {
		name  protoreflect.Name
		value string
	}{{"docs_url", svc.GetDocsUrl()}, {"runbook_url", svc.GetRunbookUrl()}} {
		if link.value == "" {
			continue
		}
		if u, err := url.Parse(link.value); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad(link.name, "%s %q must be an absolute http or https URL", link.name, link.value)
		}
	}
	for _, list := range []struct {
		name  protoreflect.Name
		types []string
	}{{"publishes", svc.GetPublishes()}, {"consumes", svc.GetConsumes()}} {
		for i, t := range list.types {
			if !eventTypePattern.MatchString(t) {
				return bad(list.name, "%s[%d] %q is not an event type such as \"org.example.captures.v1.capture_created\"", list.name, i, t)
			}
			if slices.Contains(list.types[:i], t) {
				return bad(list.name, "%s lists %q twice", list.name, t)
			}
		}
	}
	return svc, nil
}

// Event returns the checked event option of message m.
//
// It fails with an *Error that wraps ErrNotDeclared when m is not marked as
// an event, and with an *Error without it when the type is empty or not in
// reverse-DNS form, or key_field does not name a singular string or integer
// field of m.
func Event(m protoreflect.MessageDescriptor) (*optionsv1.Event, error) {
	ev, ok := extension[*optionsv1.Event](m.Options(), optionsv1.E_Event)
	if !ok {
		return nil, notDeclared(m.FullName(), optionsv1.E_Event)
	}
	bad := func(field protoreflect.Name, format string, args ...any) (*optionsv1.Event, error) {
		return nil, &Error{Element: m.FullName(), Option: optionsv1.E_Event.TypeDescriptor().FullName(), Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if !eventTypePattern.MatchString(ev.GetType()) {
		return bad("type", "type %q is not an event type such as \"org.example.captures.v1.capture_created\"", ev.GetType())
	}
	if name := ev.GetKeyField(); name != "" {
		f := m.Fields().ByName(protoreflect.Name(name))
		if f == nil {
			return bad("key_field", "key_field %q is not a field of %s", name, m.FullName())
		}
		if f.Cardinality() == protoreflect.Repeated || !keyKinds[f.Kind()] {
			return bad("key_field", "key_field %q must be a singular string or integer field, not %s", name, describeField(f))
		}
	}
	return ev, nil
}

// Check checks every Loam option in file f and returns all the problems
// joined, or nil. Every method of every service must carry a valid access
// rule; service and event options are checked where they are declared.
// Services without a service option are not an error here: whether an owner
// is mandatory is a lint rule's decision.
func Check(f protoreflect.FileDescriptor) error {
	var errs []error
	services := f.Services()
	for i := range services.Len() {
		s := services.Get(i)
		if _, err := Service(s); err != nil && !errors.Is(err, ErrNotDeclared) {
			errs = append(errs, err)
		}
		methods := s.Methods()
		for j := range methods.Len() {
			if _, err := Access(methods.Get(j)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	var walk func(protoreflect.MessageDescriptors)
	walk = func(msgs protoreflect.MessageDescriptors) {
		for i := range msgs.Len() {
			m := msgs.Get(i)
			if _, err := Event(m); err != nil && !errors.Is(err, ErrNotDeclared) {
				errs = append(errs, err)
			}
			walk(m.Messages())
		}
	}
	walk(f.Messages())
	return errors.Join(errs...)
}

// keyKinds are the field kinds that can carry an event's ordering key.
var keyKinds = map[protoreflect.Kind]bool{
	protoreflect.StringKind: true,
	protoreflect.Int32Kind:  true, protoreflect.Sint32Kind: true, protoreflect.Sfixed32Kind: true,
	protoreflect.Int64Kind: true, protoreflect.Sint64Kind: true, protoreflect.Sfixed64Kind: true,
	protoreflect.Uint32Kind: true, protoreflect.Fixed32Kind: true,
	protoreflect.Uint64Kind: true, protoreflect.Fixed64Kind: true,
}

func describeField(f protoreflect.FieldDescriptor) string {
	switch {
	case f.IsMap():
		return "a map"
	case f.Cardinality() == protoreflect.Repeated:
		return "a repeated " + f.Kind().String()
	default:
		return "a " + f.Kind().String()
	}
}

// extension returns the extension xt of opts when it is set.
func extension[T proto.Message](opts proto.Message, xt protoreflect.ExtensionType) (T, bool) {
	var zero T
	if opts == nil || !proto.HasExtension(opts, xt) {
		return zero, false
	}
	v, ok := proto.GetExtension(opts, xt).(T)
	return v, ok
}

func notDeclared(element protoreflect.FullName, xt protoreflect.ExtensionType) error {
	return &Error{Element: element, Option: xt.TypeDescriptor().FullName(), Reason: "not declared", err: ErrNotDeclared}
}

// FindMethod returns the descriptor of the method with the full gRPC name
// fullMethod ("/package.Service/Method") from the global protobuf registry,
// where generated code registers every .proto linked into the binary. ok is
// false for a malformed name or a method without a registered descriptor,
// such as one served through a hand-written grpc.ServiceDesc.
func FindMethod(fullMethod string) (md protoreflect.MethodDescriptor, ok bool) {
	svc, name, found := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !found || !strings.HasPrefix(fullMethod, "/") {
		return nil, false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, false
	}
	sd, isService := d.(protoreflect.ServiceDescriptor)
	if !isService {
		return nil, false
	}
	md = sd.Methods().ByName(protoreflect.Name(name))
	return md, md != nil
}
