package cache

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// message builds the descriptor of a message Capture, in a file of its
// own, with the fields given as name -> number (all strings).
func message(t *testing.T, fields map[string]int32) protoreflect.MessageDescriptor {
	t.Helper()
	m := &descriptorpb.DescriptorProto{Name: proto.String("Capture")}
	for name, n := range fields {
		m.Field = append(m.Field, &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(n),
			Type:  descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		})
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("capture.proto"), Package: proto.String("test.v1"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{m},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().Get(0)
}

// A schema change of the value changes the fingerprint, and so the keys.
func TestFingerprintFollowsSchema(t *testing.T) {
	v1 := protoFingerprint(message(t, map[string]int32{"id": 1}))
	if again := protoFingerprint(message(t, map[string]int32{"id": 1})); again != v1 {
		t.Errorf("the same schema gave %s and %s", v1, again)
	}
	for name, fields := range map[string]map[string]int32{
		"field added":      {"id": 1, "note": 2},
		"field renumbered": {"id": 2},
		"field renamed":    {"key": 1},
	} {
		if got := protoFingerprint(message(t, fields)); got == v1 {
			t.Errorf("%s: fingerprint %s did not change", name, got)
		}
	}
	type a struct {
		Name string `json:"name"`
	}
	type b struct {
		Name string `json:"full_name"`
	}
	if shapeFingerprint(reflect.TypeFor[a]()) == shapeFingerprint(reflect.TypeFor[b]()) {
		t.Error("a changed JSON tag did not change the fingerprint")
	}
}
