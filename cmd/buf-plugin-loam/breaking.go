package main

import (
	"context"

	"buf.build/go/bufplugin/check"
	"buf.build/go/bufplugin/check/checkutil"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/proto/loam/options"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

// Breaking rule IDs.
const (
	ruleAccessNotWeakened = "LOAM_ACCESS_NOT_WEAKENED"
	rulePermissionSame    = "LOAM_PERMISSION_SAME"
	ruleEventTypeSame     = "LOAM_EVENT_TYPE_SAME"
	ruleEventFieldNoDel   = "LOAM_EVENT_FIELD_NO_DELETE"
)

var breakingRules = []*check.RuleSpec{
	{
		ID:      ruleAccessNotWeakened,
		Purpose: "Checks that no RPC's access rule is weakened: from permission to authenticated or public, from authenticated to public, or by dropping its condition.",
		Handler: checkutil.NewMethodPairRuleHandler(checkAccessWeakened, checkutil.WithoutImports()),
	},
	{
		ID:      rulePermissionSame,
		Purpose: "Checks that no RPC's permission is renamed, which would take the method away from every role that grants the old name.",
		Handler: checkutil.NewMethodPairRuleHandler(checkPermissionRenamed, checkutil.WithoutImports()),
	},
	{
		ID:      ruleEventTypeSame,
		Purpose: "Checks that no event message changes or loses its CloudEvents type, which its consumers subscribe to.",
		Handler: checkutil.NewMessagePairRuleHandler(checkEventTypeChanged, checkutil.WithoutImports()),
	},
	{
		ID:      ruleEventFieldNoDel,
		Purpose: "Checks that no field of an event message is removed or renumbered, even when reserved, since events already published still carry it.",
		Handler: checkutil.NewMessagePairRuleHandler(checkEventFields, checkutil.WithoutImports()),
	},
}

// strength orders the modes of an access rule from the weakest.
func strength(a *optionsv1.Access) int {
	switch {
	case a.GetPublic():
		return 0
	case a.GetAuthenticated():
		return 1
	}
	return 2 // permission
}

// mode describes the mode of a, as written in the option.
func mode(a *optionsv1.Access) string {
	switch {
	case a.GetPublic():
		return "public"
	case a.GetAuthenticated():
		return "authenticated"
	}
	return "permission " + a.GetPermission()
}

// accessPair returns the checked access rules of a method before and
// after the change, or ok false when either is missing or invalid: a
// missing rule denies every caller, and an invalid one is for lint to
// report.
func accessPair(md, against protoreflect.MethodDescriptor) (now, was *optionsv1.Access, ok bool) {
	now, err := options.Access(md)
	if err != nil {
		return nil, nil, false
	}
	was, err = options.Access(against)
	if err != nil {
		return nil, nil, false
	}
	return now, was, true
}

func checkAccessWeakened(_ context.Context, w check.ResponseWriter, _ check.Request, md, against protoreflect.MethodDescriptor) error {
	now, was, ok := accessPair(md, against)
	if !ok {
		return nil
	}
	switch {
	case strength(now) < strength(was):
		w.AddAnnotation(check.WithMessagef("RPC %s was %s and is now %s: callers that were refused are admitted. Add a new method, or a new version, instead.",
			md.Name(), mode(was), mode(now)),
			at(md, optionsv1.E_Access, "", -1), againstAt(against, optionsv1.E_Access, ""))
	case strength(now) == strength(was) && was.GetCondition() != "" && now.GetCondition() == "":
		w.AddAnnotation(check.WithMessagef("RPC %s dropped its condition %q: callers that it refused are admitted.",
			md.Name(), was.GetCondition()),
			at(md, optionsv1.E_Access, "", -1), againstAt(against, optionsv1.E_Access, ""))
	}
	return nil
}

func checkPermissionRenamed(_ context.Context, w check.ResponseWriter, _ check.Request, md, against protoreflect.MethodDescriptor) error {
	now, was, ok := accessPair(md, against)
	if !ok || now.GetPermission() == "" || was.GetPermission() == "" || now.GetPermission() == was.GetPermission() {
		return nil
	}
	w.AddAnnotation(check.WithMessagef("RPC %s requires permission %q instead of %q: roles that grant %q no longer reach it. Grant the new name in every role before the change ships, or keep the old one.",
		md.Name(), now.GetPermission(), was.GetPermission(), was.GetPermission()),
		at(md, optionsv1.E_Access, "permission", -1), againstAt(against, optionsv1.E_Access, "permission"))
	return nil
}

func checkEventTypeChanged(_ context.Context, w check.ResponseWriter, _ check.Request, m, against protoreflect.MessageDescriptor) error {
	was := declared[*optionsv1.Event](against.Options(), optionsv1.E_Event)
	if was == nil {
		return nil
	}
	now := declared[*optionsv1.Event](m.Options(), optionsv1.E_Event)
	switch {
	case now == nil:
		w.AddAnnotation(check.WithMessagef("Message %s is no longer an event; it was published as %q, and its consumers still subscribe to that type.",
			m.Name(), was.GetType()),
			check.WithDescriptor(m), againstAt(against, optionsv1.E_Event, "type"))
	case now.GetType() != was.GetType():
		w.AddAnnotation(check.WithMessagef("Event %s changed its type from %q to %q: consumers subscribed to the old type stop receiving it. Publish a new message with the new type instead.",
			m.Name(), was.GetType(), now.GetType()),
			at(m, optionsv1.E_Event, "type", -1), againstAt(against, optionsv1.E_Event, "type"))
	}
	return nil
}

func checkEventFields(_ context.Context, w check.ResponseWriter, _ check.Request, m, against protoreflect.MessageDescriptor) error {
	if declared[*optionsv1.Event](against.Options(), optionsv1.E_Event) == nil {
		return nil
	}
	fields := against.Fields()
	for i := range fields.Len() {
		old := fields.Get(i)
		byName := m.Fields().ByName(old.Name())
		switch {
		case byName != nil && byName.Number() != old.Number():
			w.AddAnnotation(check.WithMessagef("Event %s renumbered field %s from %d to %d: events already published carry it as %d.",
				m.Name(), old.Name(), old.Number(), byName.Number(), old.Number()),
				check.WithDescriptor(byName), check.WithAgainstDescriptor(old))
		case byName == nil && m.Fields().ByNumber(old.Number()) == nil:
			w.AddAnnotation(check.WithMessagef("Event %s removed field %s (%d): events already published, and consumers that read them, still carry it. Deprecate the field instead.",
				m.Name(), old.Name(), old.Number()),
				check.WithDescriptor(m), check.WithAgainstDescriptor(old))
		}
	}
	return nil
}
