package options_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/loamhq/loam/proto/loam/options"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

// fileSpec describes a small test.v1 file: one service whose methods carry
// the given access rules, and one message with the given event option.
type fileSpec struct {
	service *optionsv1.Service
	methods map[string]*optionsv1.Access // method name to rule; nil means no rule
	event   *optionsv1.Event
}

// build compiles spec into a real file descriptor, the way protoc would
// hand it to a plugin or the generated code would register it.
func build(t testing.TB, spec fileSpec) protoreflect.FileDescriptor {
	t.Helper()
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	i64 := descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum()
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()

	event := &descriptorpb.DescriptorProto{
		Name: proto.String("Planted"),
		Field: []*descriptorpb.FieldDescriptorProto{
			{Name: proto.String("planter_id"), Number: proto.Int32(1), Type: str, Label: optional, JsonName: proto.String("planterId")},
			{Name: proto.String("count"), Number: proto.Int32(2), Type: i64, Label: optional, JsonName: proto.String("count")},
			{Name: proto.String("tags"), Number: proto.Int32(3), Type: str, Label: repeated, JsonName: proto.String("tags")},
			{Name: proto.String("request"), Number: proto.Int32(4), Type: msg, Label: optional, TypeName: proto.String(".test.v1.Request"), JsonName: proto.String("request")},
		},
		Options: &descriptorpb.MessageOptions{},
	}
	if spec.event != nil {
		proto.SetExtension(event.Options, optionsv1.E_Event, spec.event)
	}
	svc := &descriptorpb.ServiceDescriptorProto{Name: proto.String("Svc"), Options: &descriptorpb.ServiceOptions{}}
	if spec.service != nil {
		proto.SetExtension(svc.Options, optionsv1.E_Service, spec.service)
	}
	for _, name := range slices.Sorted(maps.Keys(spec.methods)) {
		m := &descriptorpb.MethodDescriptorProto{
			Name:       proto.String(name),
			InputType:  proto.String(".test.v1.Request"),
			OutputType: proto.String(".test.v1.Request"),
			Options:    &descriptorpb.MethodOptions{},
		}
		if rule := spec.methods[name]; rule != nil {
			proto.SetExtension(m.Options, optionsv1.E_Access, rule)
		}
		svc.Method = append(svc.Method, m)
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("test/v1/test.proto"),
		Package:    proto.String("test.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"loam/options/v1/options.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Request")},
			event,
		},
		Service: []*descriptorpb.ServiceDescriptorProto{svc},
	}
	// Round-trip through bytes, as a descriptor read from a plugin request
	// or an embedded raw descriptor would arrive.
	raw, err := proto.Marshal(fdp)
	if err != nil {
		t.Fatal(err)
	}
	fdp = new(descriptorpb.FileDescriptorProto)
	if err := proto.Unmarshal(raw, fdp); err != nil {
		t.Fatal(err)
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatalf("protodesc.NewFile() = %v", err)
	}
	return fd
}

func method(t testing.TB, rule *optionsv1.Access) protoreflect.MethodDescriptor {
	t.Helper()
	return build(t, fileSpec{methods: map[string]*optionsv1.Access{"Do": rule}}).Services().Get(0).Methods().Get(0)
}

func TestAccess(t *testing.T) {
	tests := []struct {
		name       string
		rule       *optionsv1.Access
		wantErr    string // substring; empty means valid
		notDecl    bool
		wantResult *optionsv1.Access
	}{
		{name: "public", rule: &optionsv1.Access{Rule: &optionsv1.Access_Public{Public: true}}},
		{name: "authenticated", rule: &optionsv1.Access{Rule: &optionsv1.Access_Authenticated{Authenticated: true}}},
		{name: "permission", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: "captures.create"}}},
		{name: "permission with condition", rule: &optionsv1.Access{
			Rule:      &optionsv1.Access_Permission{Permission: "captures.create"},
			Condition: "request.planter_id == principal.subject",
		}},
		{name: "authenticated with condition", rule: &optionsv1.Access{
			Rule:      &optionsv1.Access_Authenticated{Authenticated: true},
			Condition: "principal.subject != ''",
		}},
		{name: "three-segment permission", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: "captures.photos.read"}}},
		{name: "missing rule", rule: nil, notDecl: true, wantErr: "test.v1.Svc.Do: option (loam.options.v1.access): not declared"},
		{name: "empty rule", rule: &optionsv1.Access{}, wantErr: "set exactly one of public, authenticated or permission"},
		{name: "condition alone", rule: &optionsv1.Access{Condition: "true"}, wantErr: "set exactly one"},
		{name: "public false", rule: &optionsv1.Access{Rule: &optionsv1.Access_Public{Public: false}}, wantErr: "public must be true"},
		{name: "authenticated false", rule: &optionsv1.Access{Rule: &optionsv1.Access_Authenticated{Authenticated: false}}, wantErr: "authenticated must be true"},
		{name: "public with condition", rule: &optionsv1.Access{
			Rule:      &optionsv1.Access_Public{Public: true},
			Condition: "true",
		}, wantErr: "cannot have a condition"},
		{name: "empty permission", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{}}, wantErr: `permission ""`},
		{name: "single-segment permission", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: "admin"}}, wantErr: `permission "admin"`},
		{name: "upper-case permission", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: "Captures.Create"}}, wantErr: `permission "Captures.Create"`},
		{name: "wildcard permission", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: "captures.*"}}, wantErr: `permission "captures.*"`},
		{name: "trailing dot", rule: &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: "captures."}}, wantErr: `permission "captures."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := method(t, tt.rule)
			got, err := options.Access(m)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Access(%s) error = %v, want nil", m.FullName(), err)
				}
				if diff := cmp.Diff(tt.rule, got, protocmp.Transform()); diff != "" {
					t.Errorf("Access(%s) mismatch (-want +got):\n%s", m.FullName(), diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("Access(%s) = %v, want error containing %q", m.FullName(), got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Access(%s) error = %q, want it to contain %q", m.FullName(), err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "test.v1.Svc.Do: option (loam.options.v1.access): ") {
				t.Errorf("Access(%s) error = %q, want it to name the method and the option", m.FullName(), err)
			}
			if errors.Is(err, options.ErrNotDeclared) != tt.notDecl {
				t.Errorf("errors.Is(%v, ErrNotDeclared) = %v, want %v", err, !tt.notDecl, tt.notDecl)
			}
			var oerr *options.Error
			if !errors.As(err, &oerr) || oerr.Element != "test.v1.Svc.Do" {
				t.Errorf("errors.As(%v, *Error) element = %v, want test.v1.Svc.Do", err, oerr)
			}
		})
	}
}

func TestService(t *testing.T) {
	valid := func() *optionsv1.Service {
		return &optionsv1.Service{
			Owner:      "team-capture",
			Contact:    "#team-capture",
			Tier:       optionsv1.Tier_TIER_CRITICAL,
			DocsUrl:    "https://docs.example.org/captures",
			RunbookUrl: "http://runbooks.example.org/captures",
			Publishes:  []string{"org.example.captures.v1.capture_created"},
			Consumes:   []string{"org.example.planters.v1.planter_joined", "org.example.planters.v1.planter_left"},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*optionsv1.Service) *optionsv1.Service
		wantErr string
		notDecl bool
	}{
		{name: "full", mutate: func(s *optionsv1.Service) *optionsv1.Service { return s }},
		{name: "owner only", mutate: func(*optionsv1.Service) *optionsv1.Service { return &optionsv1.Service{Owner: "team-x"} }},
		{name: "not declared", mutate: func(*optionsv1.Service) *optionsv1.Service { return nil }, notDecl: true, wantErr: "not declared"},
		{name: "no owner", mutate: func(s *optionsv1.Service) *optionsv1.Service { s.Owner = ""; return s }, wantErr: "owner is required"},
		{name: "unknown tier", mutate: func(s *optionsv1.Service) *optionsv1.Service { s.Tier = 42; return s }, wantErr: "tier 42 is not a known"},
		{name: "relative docs url", mutate: func(s *optionsv1.Service) *optionsv1.Service { s.DocsUrl = "/docs"; return s }, wantErr: `docs_url "/docs"`},
		{name: "ftp runbook url", mutate: func(s *optionsv1.Service) *optionsv1.Service { s.RunbookUrl = "ftp://x.org/r"; return s }, wantErr: `runbook_url "ftp://x.org/r"`},
		{name: "bad published type", mutate: func(s *optionsv1.Service) *optionsv1.Service {
			s.Publishes = []string{"capture created"}
			return s
		}, wantErr: `publishes[0] "capture created"`},
		{name: "duplicate consumed type", mutate: func(s *optionsv1.Service) *optionsv1.Service {
			s.Consumes = append(s.Consumes, s.Consumes[0])
			return s
		}, wantErr: `consumes lists "org.example.planters.v1.planter_joined" twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := tt.mutate(valid())
			s := build(t, fileSpec{service: opt}).Services().Get(0)
			got, err := options.Service(s)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Service(%s) error = %v, want nil", s.FullName(), err)
				}
				if diff := cmp.Diff(opt, got, protocmp.Transform()); diff != "" {
					t.Errorf("Service(%s) mismatch (-want +got):\n%s", s.FullName(), diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Service(%s) error = %v, want it to contain %q", s.FullName(), err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "test.v1.Svc: option (loam.options.v1.service): ") {
				t.Errorf("Service(%s) error = %q, want it to name the service and the option", s.FullName(), err)
			}
			if errors.Is(err, options.ErrNotDeclared) != tt.notDecl {
				t.Errorf("errors.Is(%v, ErrNotDeclared) = %v, want %v", err, !tt.notDecl, tt.notDecl)
			}
		})
	}
}

func TestEvent(t *testing.T) {
	tests := []struct {
		name    string
		event   *optionsv1.Event
		wantErr string
		notDecl bool
	}{
		{name: "string key", event: &optionsv1.Event{Type: "org.example.trees.v1.planted", KeyField: "planter_id"}},
		{name: "integer key", event: &optionsv1.Event{Type: "org.example.trees.v1.planted", KeyField: "count"}},
		{name: "no key", event: &optionsv1.Event{Type: "com.example.trees-v1.planted"}},
		{name: "not an event", event: nil, notDecl: true, wantErr: "test.v1.Planted: option (loam.options.v1.event): not declared"},
		{name: "empty type", event: &optionsv1.Event{}, wantErr: `type ""`},
		{name: "type with spaces", event: &optionsv1.Event{Type: "trees planted"}, wantErr: `type "trees planted"`},
		{name: "single-segment type", event: &optionsv1.Event{Type: "planted"}, wantErr: `type "planted"`},
		{name: "unknown key field", event: &optionsv1.Event{Type: "org.example.planted", KeyField: "planter"}, wantErr: `key_field "planter" is not a field of test.v1.Planted`},
		{name: "repeated key field", event: &optionsv1.Event{Type: "org.example.planted", KeyField: "tags"}, wantErr: `key_field "tags" must be a singular string or integer field, not a repeated string`},
		{name: "message key field", event: &optionsv1.Event{Type: "org.example.planted", KeyField: "request"}, wantErr: "not a message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := build(t, fileSpec{event: tt.event}).Messages().ByName("Planted")
			got, err := options.Event(m)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Event(%s) error = %v, want nil", m.FullName(), err)
				}
				if diff := cmp.Diff(tt.event, got, protocmp.Transform()); diff != "" {
					t.Errorf("Event(%s) mismatch (-want +got):\n%s", m.FullName(), diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Event(%s) error = %v, want it to contain %q", m.FullName(), err, tt.wantErr)
			}
			if errors.Is(err, options.ErrNotDeclared) != tt.notDecl {
				t.Errorf("errors.Is(%v, ErrNotDeclared) = %v, want %v", err, !tt.notDecl, tt.notDecl)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	perm := func(p string) *optionsv1.Access {
		return &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: p}}
	}
	t.Run("valid file", func(t *testing.T) {
		f := build(t, fileSpec{
			service: &optionsv1.Service{Owner: "team-x"},
			methods: map[string]*optionsv1.Access{"Get": perm("trees.read"), "Ping": {Rule: &optionsv1.Access_Public{Public: true}}},
			event:   &optionsv1.Event{Type: "org.example.planted", KeyField: "planter_id"},
		})
		if err := options.Check(f); err != nil {
			t.Errorf("Check(%s) = %v, want nil", f.Path(), err)
		}
	})
	t.Run("every problem reported", func(t *testing.T) {
		f := build(t, fileSpec{
			service: &optionsv1.Service{},
			methods: map[string]*optionsv1.Access{"Create": nil, "Get": perm("Trees"), "List": perm("trees.list")},
			event:   &optionsv1.Event{Type: "planted"},
		})
		err := options.Check(f)
		if err == nil {
			t.Fatalf("Check(%s) = nil, want four problems", f.Path())
		}
		var got []string
		for _, line := range strings.Split(err.Error(), "\n") {
			got = append(got, line[:strings.Index(line, "):")+1])
		}
		want := []string{
			"test.v1.Svc: option (loam.options.v1.service)",
			"test.v1.Svc.Create: option (loam.options.v1.access)",
			"test.v1.Svc.Get: option (loam.options.v1.access)",
			"test.v1.Planted: option (loam.options.v1.event)",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Check(%s) problems mismatch (-want +got):\n%s\nerror: %v", f.Path(), diff, err)
		}
	})
	t.Run("undeclared service option is not a problem", func(t *testing.T) {
		f := build(t, fileSpec{methods: map[string]*optionsv1.Access{"Get": perm("trees.read")}})
		if err := options.Check(f); err != nil {
			t.Errorf("Check(%s) = %v, want nil", f.Path(), err)
		}
	})
}

// TestGeneratedDescriptor reads the options of the generated options.proto
// itself, whose extensions must be registered under the numbers the file
// records.
func TestGeneratedDescriptor(t *testing.T) {
	want := map[protoreflect.FullName]protoreflect.FieldNumber{
		"loam.options.v1.access":  51001,
		"loam.options.v1.service": 51002,
		"loam.options.v1.event":   51003,
	}
	for name, num := range want {
		xt, err := protoregistry.GlobalTypes.FindExtensionByName(name)
		if err != nil {
			t.Errorf("FindExtensionByName(%s) = %v", name, err)
			continue
		}
		if got := xt.TypeDescriptor().Number(); got != num {
			t.Errorf("%s number = %d, want %d", name, got, num)
		}
		if got := xt.TypeDescriptor().Number(); got < 50000 || got > 99999 {
			t.Errorf("%s number = %d, want it in 50000-99999", name, got)
		}
	}
}

func TestFindMethod(t *testing.T) {
	fd := build(t, fileSpec{methods: map[string]*optionsv1.Access{"Find": {Rule: &optionsv1.Access_Public{Public: true}}}})
	if _, ok := options.FindMethod("/test.v1.Svc/Find"); !ok {
		if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		fullMethod string
		want       bool
	}{
		{"/test.v1.Svc/Find", true},
		{"/test.v1.Svc/Lose", false},
		{"/test.v1.Nope/Find", false},
		{"/test.v1.Request/Find", false}, // a message, not a service
		{"test.v1.Svc/Find", false},
		{"/test.v1.Svc", false},
	}
	for _, tt := range tests {
		md, ok := options.FindMethod(tt.fullMethod)
		if ok != tt.want {
			t.Errorf("FindMethod(%q) = %v, %v; want found %v", tt.fullMethod, md, ok, tt.want)
		}
		if ok && md.FullName() != "test.v1.Svc.Find" {
			t.Errorf("FindMethod(%q) = %s, want test.v1.Svc.Find", tt.fullMethod, md.FullName())
		}
	}
}

// TestErrorField: every problem names the field of the option at fault,
// and a problem with the option as a whole names none.
func TestErrorField(t *testing.T) {
	perm := func(p string) *optionsv1.Access {
		return &optionsv1.Access{Rule: &optionsv1.Access_Permission{Permission: p}}
	}
	tests := []struct {
		name string
		err  func(t *testing.T) error
		want protoreflect.Name
	}{
		{"access not declared", func(t *testing.T) error { _, err := options.Access(method(t, nil)); return err }, ""},
		{"access without a mode", func(t *testing.T) error { _, err := options.Access(method(t, &optionsv1.Access{})); return err }, ""},
		{"public false", func(t *testing.T) error {
			_, err := options.Access(method(t, &optionsv1.Access{Rule: &optionsv1.Access_Public{}}))
			return err
		}, "public"},
		{"authenticated false", func(t *testing.T) error {
			_, err := options.Access(method(t, &optionsv1.Access{Rule: &optionsv1.Access_Authenticated{}}))
			return err
		}, "authenticated"},
		{"public with condition", func(t *testing.T) error {
			_, err := options.Access(method(t, &optionsv1.Access{Rule: &optionsv1.Access_Public{Public: true}, Condition: "true"}))
			return err
		}, "condition"},
		{"malformed permission", func(t *testing.T) error { _, err := options.Access(method(t, perm("Trees"))); return err }, "permission"},
		{"service not declared", func(t *testing.T) error {
			_, err := options.Service(build(t, fileSpec{}).Services().Get(0))
			return err
		}, ""},
		{"no owner", func(t *testing.T) error {
			_, err := options.Service(build(t, fileSpec{service: &optionsv1.Service{Contact: "#x"}}).Services().Get(0))
			return err
		}, "owner"},
		{"bad tier", func(t *testing.T) error {
			_, err := options.Service(build(t, fileSpec{service: &optionsv1.Service{Owner: "x", Tier: 9}}).Services().Get(0))
			return err
		}, "tier"},
		{"bad runbook", func(t *testing.T) error {
			_, err := options.Service(build(t, fileSpec{service: &optionsv1.Service{Owner: "x", RunbookUrl: "/r"}}).Services().Get(0))
			return err
		}, "runbook_url"},
		{"bad consumed type", func(t *testing.T) error {
			_, err := options.Service(build(t, fileSpec{service: &optionsv1.Service{Owner: "x", Consumes: []string{"a b"}}}).Services().Get(0))
			return err
		}, "consumes"},
		{"bad event type", func(t *testing.T) error {
			_, err := options.Event(build(t, fileSpec{event: &optionsv1.Event{Type: "planted"}}).Messages().ByName("Planted"))
			return err
		}, "type"},
		{"unknown key field", func(t *testing.T) error {
			_, err := options.Event(build(t, fileSpec{event: &optionsv1.Event{Type: "org.example.planted", KeyField: "nope"}}).Messages().ByName("Planted"))
			return err
		}, "key_field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var oerr *options.Error
			if err := tt.err(t); !errors.As(err, &oerr) {
				t.Fatalf("error = %v, want an *options.Error", err)
			}
			if oerr.Field != tt.want {
				t.Errorf("Error.Field = %q, want %q (%v)", oerr.Field, tt.want, oerr)
			}
		})
	}
}
