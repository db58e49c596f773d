package main

import (
	"slices"
	"strings"
	"testing"

	descriptorv1 "buf.build/gen/go/bufbuild/bufplugin/protocolbuffers/go/buf/plugin/descriptor/v1"
	"buf.build/go/bufplugin/check"
	"buf.build/go/bufplugin/check/checktest"
	"buf.build/go/bufplugin/descriptor"
)

// loamProto is where the contracts under test import Loam's options from.
const loamProto = "../../proto"

func TestSpec(t *testing.T) {
	checktest.SpecTest(t, spec)
}

// request is a check of the files under dir, with their imports resolved
// from dir and Loam's protos, run against the same files under against
// when it is set, by rule alone.
func request(dir string, files []string, against string, rule string) *checktest.RequestSpec {
	r := &checktest.RequestSpec{
		Files:   &checktest.ProtoFileSpec{DirPaths: []string{dir, loamProto}, FilePaths: files},
		RuleIDs: []string{rule},
	}
	if against != "" {
		r.AgainstFiles = &checktest.ProtoFileSpec{DirPaths: []string{against, loamProto}, FilePaths: files}
	}
	return r
}

// loc is a location in the file under test; run fills in its name.
func loc(startLine, startColumn, endLine, endColumn int) *checktest.ExpectedFileLocation {
	return &checktest.ExpectedFileLocation{StartLine: startLine, StartColumn: startColumn, EndLine: endLine, EndColumn: endColumn}
}

// TestRulesPass runs every rule, alone, on contracts that follow it: the
// lint rules on testdata/lint/good, two services where one consumes the
// other's event through an import; the breaking rules on compatible
// changes (a rule made stronger, a condition added, an event field added)
// and on no change at all.
func TestRulesPass(t *testing.T) {
	good := []string{"orders/v1/orders.proto", "billing/v1/billing.proto"}
	for _, r := range spec.Rules {
		t.Run(r.ID, func(t *testing.T) {
			if r.Type == check.RuleTypeLint {
				checktest.CheckTest{Request: request("testdata/lint/good", good, "", r.ID), Spec: spec}.Run(t)
				return
			}
			for _, dir := range []string{"compatible", "before"} {
				checktest.CheckTest{
					Request: request("testdata/breaking/"+dir, []string{"shop/v1/shop.proto"}, "testdata/breaking/before", r.ID),
					Spec:    spec,
				}.Run(t)
			}
		})
	}
}

// TestRulesFail runs every rule, alone, on a contract that breaks it in
// every way it can be broken, and checks each annotation: the message and
// where it points (zero-based lines and columns), in the new file and, for
// breaking rules, in the previous one. The lint cases are
// testdata/lint/<case>/bad/v1/bad.proto; the breaking rules all compare
// testdata/breaking/after with testdata/breaking/before.
func TestRulesFail(t *testing.T) {
	tests := []struct {
		name    string
		dir     string
		file    string
		against string
		rule    string
		want    []checktest.ExpectedAnnotation
	}{
		{
			name: "missing or malformed access rules", dir: "testdata/lint/access", file: "bad/v1/bad.proto", rule: ruleRPCAccess,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleRPCAccess, Message: "RPC None: no access rule, so a Loam server refuses to start with it; set (loam.options.v1.access) to public, authenticated or a permission.",
					FileLocation: loc(12, 2, 12, 30)},
				{RuleID: ruleRPCAccess, Message: "RPC Empty: set exactly one of public, authenticated or permission.",
					FileLocation: loc(16, 4, 16, 41)},
				{RuleID: ruleRPCAccess, Message: "RPC NotPublic: public must be true when set; to require a caller use authenticated or permission.",
					FileLocation: loc(21, 39, 21, 52)},
				{RuleID: ruleRPCAccess, Message: "RPC NotAuthenticated: authenticated must be true when set; to admit anybody use public: true.",
					FileLocation: loc(26, 39, 26, 59)},
				{RuleID: ruleRPCAccess, Message: "RPC PublicWithCondition: a public method has no principal, so it cannot have a condition.",
					FileLocation: loc(33, 6, 33, 35)},
			},
		},
		{
			name: "malformed permissions", dir: "testdata/lint/permission", file: "bad/v1/bad.proto", rule: rulePermissionFormat,
			want: []checktest.ExpectedAnnotation{
				{RuleID: rulePermissionFormat, Message: "RPC Upper: permission \"Bad.Read\" must be dot-separated lower-case segments, resource first, such as \"captures.create\".",
					FileLocation: loc(13, 39, 13, 61)},
				{RuleID: rulePermissionFormat, Message: "RPC OneSegment: permission \"admin\" must be dot-separated lower-case segments, resource first, such as \"captures.create\".",
					FileLocation: loc(18, 39, 18, 58)},
				{RuleID: rulePermissionFormat, Message: "RPC Wildcard: permission \"bad.*\" must be dot-separated lower-case segments, resource first, such as \"captures.create\".",
					FileLocation: loc(23, 39, 23, 58)},
			},
		},
		{
			name: "conditions that do not compile", dir: "testdata/lint/condition", file: "bad/v1/bad.proto", rule: ruleConditionCompile,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleConditionCompile, Message: "RPC UnknownField: condition \"request.owner == principal.subject\" does not compile against bad.v1.Req: 1:8: undefined field 'owner'.",
					FileLocation: loc(15, 6, 15, 53)},
				{RuleID: ruleConditionCompile, Message: "RPC WrongType: condition \"request.owner_id == 1\" does not compile against bad.v1.Req: 1:18: found no matching overload for '_==_' applied to '(string, int)'.",
					FileLocation: loc(23, 6, 23, 40)},
				{RuleID: ruleConditionCompile, Message: "RPC Syntax: condition \"request.owner_id ==\" does not compile against bad.v1.Req: 1:20: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}.",
					FileLocation: loc(31, 6, 31, 38)},
				{RuleID: ruleConditionCompile, Message: "RPC UnknownPrincipal: condition \"principal.nickname == 'x'\" does not compile against bad.v1.Req: 1:10: undefined field 'nickname'.",
					FileLocation: loc(39, 6, 39, 44)},
				{RuleID: ruleConditionCompile, Message: "RPC NotBool: condition \"request.count + 1\" does not compile against bad.v1.Req: the condition is of type int, not bool.",
					FileLocation: loc(47, 6, 47, 36)},
			},
		},
		{
			name: "services without an owner", dir: "testdata/lint/owner", file: "bad/v1/bad.proto", rule: ruleServiceOwner,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleServiceOwner, Message: "Service Undeclared: no (loam.options.v1.service) option; declare one that names at least the owner team.",
					FileLocation: loc(8, 0, 13, 1)},
				{RuleID: ruleServiceOwner, Message: "Service NoOwner: owner is required: name the team that owns the service.",
					FileLocation: loc(17, 38, 17, 56)},
			},
		},
		{
			name: "invalid service options", dir: "testdata/lint/service", file: "bad/v1/bad.proto", rule: ruleServiceOption,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleServiceOption, Message: "Service BadTier: tier 9 is not a known loam.options.v1.Tier.",
					FileLocation: loc(11, 4, 11, 11)},
				{RuleID: ruleServiceOption, Message: "Service BadLink: docs_url \"/docs/bad\" must be an absolute http or https URL.",
					FileLocation: loc(19, 4, 19, 25)},
				{RuleID: ruleServiceOption, Message: "Service BadType: publishes[0] \"bad thing happened\" is not an event type such as \"org.example.captures.v1.capture_created\".",
					FileLocation: loc(27, 4, 27, 35)},
				{RuleID: ruleServiceOption, Message: "Service Twice: consumes lists \"org.example.bad.v1.happened\" twice.",
					FileLocation: loc(35, 15, 35, 44)},
			},
		},
		{
			name: "event types declared by no message or by two", dir: "testdata/lint/declared", file: "bad/v1/bad.proto", rule: ruleEventDeclared,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleEventDeclared, Message: "Service Bad publishes \"org.example.bad.v1.deleted\", but no message declares it with the (loam.options.v1.event) option: declare it, or import the contract that does.",
					FileLocation: loc(11, 46, 11, 74)},
				{RuleID: ruleEventDeclared, Message: "Service Bad consumes \"org.example.bad.v1.moved\", which bad.v1.Moved and bad.v1.MovedAgain declare: a type names one message.",
					FileLocation: loc(12, 4, 12, 40)},
			},
		},
		{
			name: "malformed and duplicate event types", dir: "testdata/lint/eventtype", file: "bad/v1/bad.proto", rule: ruleEventType,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleEventType, Message: "Event NoType: type \"\" is not an event type such as \"org.example.captures.v1.capture_created\".",
					FileLocation: loc(9, 36, 9, 51)},
				{RuleID: ruleEventType, Message: "Event Spaces: type \"bad thing\" is not an event type such as \"org.example.captures.v1.capture_created\".",
					FileLocation: loc(17, 36, 17, 53)},
				{RuleID: ruleEventType, Message: "Event type \"org.example.bad.v1.same\" is declared by bad.v1.First and bad.v1.First.Nested: a type names one message, so that consumers know what to decode.",
					FileLocation: loc(25, 36, 25, 67)},
				{RuleID: ruleEventType, Message: "Event type \"org.example.bad.v1.same\" is declared by bad.v1.First and bad.v1.First.Nested: a type names one message, so that consumers know what to decode.",
					FileLocation: loc(32, 38, 32, 69)},
			},
		},
		{
			name: "key fields that do not exist or cannot key", dir: "testdata/lint/keyfield", file: "bad/v1/bad.proto", rule: ruleEventKeyField,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleEventKeyField, Message: "Event Missing: key_field \"owner\" is not a field of bad.v1.Missing.",
					FileLocation: loc(11, 4, 11, 22)},
				{RuleID: ruleEventKeyField, Message: "Event Repeated: key_field \"tags\" must be a singular string or integer field, not a repeated string.",
					FileLocation: loc(22, 4, 22, 21)},
				{RuleID: ruleEventKeyField, Message: "Event Nested: key_field \"inner\" must be a singular string or integer field, not a message.",
					FileLocation: loc(33, 4, 33, 22)},
			},
		},
		{
			name: "weakened access rules", dir: "testdata/breaking/after", file: "shop/v1/shop.proto", against: "testdata/breaking/before", rule: ruleAccessNotWeakened,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleAccessNotWeakened, Message: "RPC Sell was permission shop.sell and is now authenticated: callers that were refused are admitted. Add a new method, or a new version, instead.",
					FileLocation: loc(16, 4, 16, 60), AgainstFileLocation: loc(16, 4, 16, 64)},
				{RuleID: ruleAccessNotWeakened, Message: "RPC Browse was authenticated and is now public: callers that were refused are admitted. Add a new method, or a new version, instead.",
					FileLocation: loc(21, 4, 21, 53), AgainstFileLocation: loc(21, 4, 21, 60)},
				{RuleID: ruleAccessNotWeakened, Message: "RPC Restock was permission shop.restock and is now public: callers that were refused are admitted. Add a new method, or a new version, instead.",
					FileLocation: loc(26, 4, 26, 53), AgainstFileLocation: loc(26, 4, 26, 67)},
				{RuleID: ruleAccessNotWeakened, Message: "RPC Refund dropped its condition \"request.id != ''\": callers that it refused are admitted.",
					FileLocation: loc(31, 4, 31, 66), AgainstFileLocation: loc(31, 4, 34, 6)},
			},
		},
		{
			name: "a renamed permission", dir: "testdata/breaking/after", file: "shop/v1/shop.proto", against: "testdata/breaking/before", rule: rulePermissionSame,
			want: []checktest.ExpectedAnnotation{
				{RuleID: rulePermissionSame, Message: "RPC Catalog requires permission \"shop.catalog.read\" instead of \"shop.items.read\": roles that grant \"shop.items.read\" no longer reach it. Grant the new name in every role before the change ships, or keep the old one.",
					FileLocation: loc(36, 39, 36, 70), AgainstFileLocation: loc(39, 39, 39, 68)},
			},
		},
		{
			name: "changed and dropped event types", dir: "testdata/breaking/after", file: "shop/v1/shop.proto", against: "testdata/breaking/before", rule: ruleEventTypeSame,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleEventTypeSame, Message: "Event Sold changed its type from \"org.example.shop.v1.sold\" to \"org.example.shop.v2.sold\": consumers subscribed to the old type stop receiving it. Publish a new message with the new type instead.",
					FileLocation: loc(53, 36, 53, 68), AgainstFileLocation: loc(56, 36, 56, 68)},
				{RuleID: ruleEventTypeSame, Message: "Message Returned is no longer an event; it was published as \"org.example.shop.v1.returned\", and its consumers still subscribe to that type.",
					FileLocation: loc(60, 0, 63, 1), AgainstFileLocation: loc(64, 36, 64, 72)},
			},
		},
		{
			name: "removed and renumbered event fields", dir: "testdata/breaking/after", file: "shop/v1/shop.proto", against: "testdata/breaking/before", rule: ruleEventFieldNoDel,
			want: []checktest.ExpectedAnnotation{
				{RuleID: ruleEventFieldNoDel, Message: "Event Shipped removed field address (2): events already published, and consumers that read them, still carry it. Deprecate the field instead.",
					FileLocation: loc(66, 0, 78, 1), AgainstFileLocation: loc(80, 2, 80, 21)},
				{RuleID: ruleEventFieldNoDel, Message: "Event Shipped renumbered field weight_grams from 3 to 4: events already published carry it as 3.",
					FileLocation: loc(77, 2, 77, 25), AgainstFileLocation: loc(82, 2, 82, 25)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.want {
				if l := tt.want[i].FileLocation; l != nil {
					l.FileName = tt.file
				}
				if l := tt.want[i].AgainstFileLocation; l != nil {
					l.FileName = tt.file
				}
			}
			checktest.CheckTest{Request: request(tt.dir, []string{tt.file}, tt.against, tt.rule), Spec: spec, ExpectedAnnotations: tt.want}.Run(t)
		})
	}
}

// TestWithoutSourceInfo: contracts built without source locations (a buf
// image made with --exclude-source-info) still get every annotation, at
// the element at fault rather than at the line of the option.
func TestWithoutSourceInfo(t *testing.T) {
	files, err := (&checktest.ProtoFileSpec{DirPaths: []string{"testdata/lint/access", loamProto}, FilePaths: []string{"bad/v1/bad.proto"}}).ToFileDescriptors(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var protos []*descriptorv1.FileDescriptor
	for _, f := range files {
		p := f.ToProto()
		p.GetFileDescriptorProto().SourceCodeInfo = nil
		protos = append(protos, p)
	}
	stripped, err := descriptor.FileDescriptorsForProtoFileDescriptors(protos)
	if err != nil {
		t.Fatal(err)
	}
	req, err := check.NewRequest(stripped, check.WithRuleIDs(ruleRPCAccess))
	if err != nil {
		t.Fatal(err)
	}
	client, err := check.NewClientForSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Check(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range resp.Annotations() {
		got = append(got, a.Message()[:strings.Index(a.Message(), ":")])
	}
	want := []string{"RPC Empty", "RPC None", "RPC NotAuthenticated", "RPC NotPublic", "RPC PublicWithCondition"}
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Errorf("annotations without source info = %q, want %q", got, want)
	}
}
