// Command buf-plugin-loam is a buf check plugin that adds Loam's rules to
// `buf lint` and `buf breaking`. A method without an access rule, a CEL
// condition with a typo or an event whose key field does not exist would
// otherwise pass buf's own rules and fail only when a Loam server starts;
// with the plugin, they fail in review, next to the line at fault.
//
// It is built on buf.build/go/bufplugin and speaks buf's plugin protocol on
// stdin and stdout: buf runs it, it is not run by hand.
//
// # Lint rules
//
//	LOAM_RPC_ACCESS            every RPC declares an access rule with exactly one
//	                           of public, authenticated and permission
//	LOAM_PERMISSION_FORMAT     permissions are lower-case domain.action, such as
//	                           captures.create
//	LOAM_CONDITION_COMPILES    a CEL condition compiles and type-checks against the
//	                           request, with authz.CheckCondition: the checker the
//	                           server runs at start-up
//	LOAM_SERVICE_OWNER         every service declares the service option with an owner
//	LOAM_SERVICE_OPTION_VALID  the tier, links and event types of the service option
//	                           are valid
//	LOAM_EVENT_DECLARED        every event type that a service publishes or consumes
//	                           is declared by exactly one message's event option
//	LOAM_EVENT_TYPE            every event has a CloudEvents type in reverse-DNS form
//	                           that no other event declares
//	LOAM_EVENT_KEY_FIELD       an event's key_field names a singular string or
//	                           integer field of its message
//
// The rules about one option are those of package
// github.com/loamhq/loam/proto/loam/options, which the server applies too,
// so lint and start-up never disagree. Events are matched to a service's
// publishes and consumes by their CloudEvents type, across every file buf
// hands the plugin, imports included: a service that consumes another
// team's event imports the contract that declares it.
//
// # Breaking rules
//
// Compared with the previous version of the contract (buf breaking's
// --against):
//
//	LOAM_ACCESS_NOT_WEAKENED    an access rule is not weakened: permission, then
//	                            authenticated, then public, from strongest to
//	                            weakest; dropping a condition weakens too
//	LOAM_PERMISSION_SAME        a method's permission is not renamed, which would
//	                            take it away from every role granting the old name
//	LOAM_EVENT_TYPE_SAME        an event message keeps its CloudEvents type
//	LOAM_EVENT_FIELD_NO_DELETE  no field of an event message is removed or
//	                            renumbered, reserved or not: published events
//	                            outlive the contract that wrote them
//
// Strengthening a rule (public to authenticated, adding a condition) and
// adding fields to an event are compatible.
//
// # Using it in a service
//
// The plugin is a Go module of its own, github.com/loamhq/loam/cmd/buf-plugin-loam,
// so that bufplugin's dependencies never enter the go.mod of a service that
// imports Loam. Add it as a tool of the module that already holds buf (a
// tools module, tools/go.mod):
//
//	go get -modfile=tools/go.mod -tool github.com/loamhq/loam/cmd/buf-plugin-loam@latest
//
// and name it, with its rules, in buf.yaml:
//
//	version: v2
//	modules:
//	  - path: proto
//	  - path: third_party/loam   # written by `loam proto export third_party/loam`
//	lint:
//	  use: [STANDARD, LOAM]
//	breaking:
//	  use: [FILE, LOAM_BREAKING]
//	plugins:
//	  - plugin: buf-plugin-loam
//
// LOAM and LOAM_BREAKING are the categories of the plugin's lint and
// breaking rules; single rules can be named, or excepted, by their IDs as
// buf's own. buf starts the plugin a dozen times a run, so run buf through
// a script that finds the plugin once and puts it on PATH:
//
//	plugin=$(go tool -modfile=tools/go.mod -n buf-plugin-loam)
//	export PATH="$(dirname "$plugin"):$PATH"
//	exec go tool -modfile=tools/go.mod buf "$@"
//
// (`go tool -n` builds the tool, or finds it in Go's build cache, and
// prints its path.) `buf lint` and `buf breaking` then apply Loam's rules
// to every contract, in CI as on a laptop, with nothing to install. The
// guide is docs/governance.md in Loam's repository.
package main

import (
	"buf.build/go/bufplugin/check"
	"buf.build/go/bufplugin/info"
)

// Categories of the rules, for buf.yaml's use and except lists.
const (
	categoryLint     = "LOAM"
	categoryBreaking = "LOAM_BREAKING"
)

// spec is the plugin: every rule, in its category.
var spec = newSpec()

func newSpec() *check.Spec {
	var rules []*check.RuleSpec
	for _, r := range lintRules {
		r.Type, r.Default, r.CategoryIDs = check.RuleTypeLint, true, []string{categoryLint}
		rules = append(rules, r)
	}
	for _, r := range breakingRules {
		r.Type, r.Default, r.CategoryIDs = check.RuleTypeBreaking, true, []string{categoryBreaking}
		rules = append(rules, r)
	}
	return &check.Spec{
		Rules: rules,
		Categories: []*check.CategorySpec{
			{ID: categoryLint, Purpose: "Checks that contracts follow Loam's rules for access, ownership and events."},
			{ID: categoryBreaking, Purpose: "Checks that a change to a contract keeps its access rules and events compatible."},
		},
		Info: &info.Spec{
			Documentation: "Loam's lint and breaking rules for the loam.options.v1 options: access rules, service ownership and events.",
		},
	}
}

func main() {
	check.Main(spec)
}
