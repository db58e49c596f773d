package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
)

type nodeKind int

const (
	sectionNode nodeKind = iota // a struct: its keys are its fields
	leafNode                    // a single value (scalars, lists, secrets, TextUnmarshalers)
	mapNode                     // a map: any sub-key is accepted and decoded into it
)

// node is one key of a configuration type.
type node struct {
	path     string
	kind     nodeKind
	typ      reflect.Type
	index    []int // field indexes from the root struct, through pointers
	children map[string]*node
	remain   *node  // a section's `koanf:",remain"` map, which takes its unknown keys
	def      string // the `default:"..."` tag
	hasDef   bool
	secret   bool // the value is or holds a Secret
}

// schema is the tree of keys of a configuration type.
type schema struct {
	root  *node
	nodes map[string]*node // by path; sections, leaves and maps
	byGo  map[string]*node // by Go field path, "Service.Port", as validator names fields
}

var (
	secretType   = reflect.TypeFor[Secret]()
	durationType = reflect.TypeFor[time.Duration]()
	textType     = reflect.TypeFor[encoding.TextUnmarshaler]()
	schemas      sync.Map // reflect.Type -> *schema
)

// schemaOf returns the schema of the struct type t, built once per type.
func schemaOf(t reflect.Type) (*schema, error) {
	if s, ok := schemas.Load(t); ok {
		return s.(*schema), nil
	}
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("config: the configuration type must be a struct, not %s", t)
	}
	s := &schema{nodes: map[string]*node{}, byGo: map[string]*node{}}
	s.root = &node{kind: sectionNode, typ: t, children: map[string]*node{}}
	if err := s.walk(s.root, t, nil, ""); err != nil {
		return nil, err
	}
	schemas.Store(t, s)
	return s, nil
}

func (s *schema) walk(sec *node, t reflect.Type, index []int, goPath string) error {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		if name == "-" {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		goName := join(goPath, f.Name)
		ft := f.Type
		if opts == "remain" {
			if ft.Kind() != reflect.Map || ft.Key().Kind() != reflect.String {
				return fmt.Errorf("config: %s.%s: a remain field must be a map with string keys", t, f.Name)
			}
			sec.remain = &node{path: sec.path, kind: mapNode, typ: ft, index: idx, secret: holdsSecret(ft, nil)}
			s.byGo[goName] = sec.remain
			continue
		}
		if name == "" && (f.Anonymous || opts == "squash") && isSection(ft) {
			if err := s.walk(sec, deref(ft), idx, goName); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		n := &node{path: join(sec.path, name), typ: ft, index: idx}
		n.def, n.hasDef = f.Tag.Lookup("default")
		switch {
		case isSection(ft):
			n.kind, n.children = sectionNode, map[string]*node{}
			if err := s.walk(n, deref(ft), idx, goName); err != nil {
				return err
			}
		case ft.Kind() == reflect.Map:
			n.kind = mapNode
		default:
			n.kind = leafNode
		}
		n.secret = n.kind != sectionNode && holdsSecret(ft, nil)
		if _, dup := sec.children[name]; dup {
			return fmt.Errorf("config: %s: two fields have the key %q", t, n.path)
		}
		sec.children[name] = n
		s.nodes[n.path] = n
		s.byGo[goName] = n
	}
	return nil
}

// leaves calls fn for every leaf and map key, in no particular order.
func (s *schema) leaves(fn func(*node)) {
	var walk func(*node)
	walk = func(n *node) {
		if n.kind != sectionNode {
			fn(n)
			return
		}
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(s.root)
}

func isSection(t reflect.Type) bool {
	t = deref(t)
	return t.Kind() == reflect.Struct && t != secretType &&
		!reflect.PointerTo(t).Implements(textType) && t != reflect.TypeFor[time.Time]()
}

func deref(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}

// holdsSecret reports whether a value of type t is or holds a Secret:
// through pointers, lists and maps, and in the fields of structs (a list
// of rules that each carry a token). seen guards against recursive types.
func holdsSecret(t reflect.Type, seen map[reflect.Type]bool) bool {
	for {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			t = t.Elem()
			continue
		}
		break
	}
	if t == secretType {
		return true
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	if seen == nil {
		seen = map[reflect.Type]bool{}
	}
	seen[t] = true
	for i := range t.NumField() {
		if holdsSecret(t.Field(i).Type, seen) {
			return true
		}
	}
	return false
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// field returns the settable field of n inside root, allocating nil
// pointers on the way.
func field(root reflect.Value, index []int) reflect.Value {
	v := root
	for _, i := range index {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(i)
	}
	return v
}
