package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Codec turns values into bytes for the shared tier and back. New picks
// one by the value type unless WithCodec gives another:
//
//   - a protobuf message (a pointer to a generated type): protobuf binary,
//     deterministic;
//   - []byte and string: the bytes as they are;
//   - anything else: encoding/json.
//
// A Codec must be safe for concurrent use. Decode may keep data.
type Codec[V any] interface {
	// Encode appends the encoding of v to dst and returns the result.
	Encode(dst []byte, v V) ([]byte, error)
	// Decode reads a value that Encode wrote.
	Decode(data []byte) (V, error)
}

// protoCodec encodes a protobuf message type V, a pointer to a generated
// message.
type protoCodec[V any] struct{ mt protoreflect.MessageType }

func (c protoCodec[V]) Encode(dst []byte, v V) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(dst, any(v).(proto.Message))
}

func (c protoCodec[V]) Decode(data []byte) (V, error) {
	m := c.mt.New().Interface()
	if err := proto.Unmarshal(data, m); err != nil {
		var zero V
		return zero, err
	}
	return m.(V), nil
}

// rawCodec stores []byte and string values as they are.
type rawCodec[V ~[]byte | ~string] struct{}

func (rawCodec[V]) Encode(dst []byte, v V) ([]byte, error) { return append(dst, v...), nil }
func (rawCodec[V]) Decode(data []byte) (V, error)          { return V(data), nil }

// jsonCodec encodes with encoding/json.
type jsonCodec[V any] struct{}

func (jsonCodec[V]) Encode(dst []byte, v V) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

func (jsonCodec[V]) Decode(data []byte) (V, error) {
	var v V
	err := json.Unmarshal(data, &v)
	return v, err
}

// defaultCodec returns the codec New uses for V, and the fingerprint of
// V's schema that goes into the version part of the keys.
func defaultCodec[V any]() (Codec[V], string, error) {
	var zero V
	t := reflect.TypeFor[V]()
	if m, ok := any(zero).(proto.Message); ok && t.Kind() == reflect.Pointer {
		mt := m.ProtoReflect().Type()
		return protoCodec[V]{mt}, "proto." + protoFingerprint(mt.Descriptor()), nil
	}
	switch any(zero).(type) {
	case []byte:
		return any(rawCodec[[]byte]{}).(Codec[V]), "", nil
	case string:
		return any(rawCodec[string]{}).(Codec[V]), "", nil
	}
	if t.Kind() == reflect.Interface || t.Kind() == reflect.Func || t.Kind() == reflect.Chan {
		return nil, "", fmt.Errorf("%w: no codec for values of type %v; pass WithCodec", ErrInvalidConfig, t)
	}
	return jsonCodec[V]{}, "json." + shapeFingerprint(t), nil
}

// protoFingerprint hashes the descriptors of md and of every message it
// reaches through its fields, so that any change to the schema of the
// value (a field added, renumbered or retyped, here or in a nested
// message) changes the keys.
func protoFingerprint(md protoreflect.MessageDescriptor) string {
	h := sha256.New()
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToDescriptorProto(md))
		h.Write([]byte(md.FullName()))
		h.Write(b)
		fields := md.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			if f.IsMap() {
				f = f.MapValue()
			}
			if m := f.Message(); m != nil {
				walk(m)
			}
		}
	}
	walk(md)
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// shapeFingerprint hashes the shape of t as encoding/json sees it: the
// names, tags and types of struct fields, recursively.
func shapeFingerprint(t reflect.Type) string {
	var b strings.Builder
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		if seen[t] {
			b.WriteString(t.String())
			return
		}
		switch t.Kind() {
		case reflect.Pointer:
			b.WriteString("*")
			walk(t.Elem())
		case reflect.Slice, reflect.Array:
			b.WriteString("[]")
			walk(t.Elem())
		case reflect.Map:
			b.WriteString("map[")
			walk(t.Key())
			b.WriteString("]")
			walk(t.Elem())
		case reflect.Struct:
			seen[t] = true
			b.WriteString(t.String() + "{")
			for i := range t.NumField() {
				f := t.Field(i)
				b.WriteString(f.Name + " " + string(f.Tag) + " ")
				walk(f.Type)
				b.WriteString(";")
			}
			b.WriteString("}")
		default:
			b.WriteString(t.String())
		}
	}
	walk(t)
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:4])
}
