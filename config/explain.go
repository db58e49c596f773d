package config

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Entry is one effective key of a configuration, as Explain reports it.
type Entry struct {
	// Key is the key path, like "service.port". Keys inside maps are listed
	// one by one ("labels.team").
	Key string
	// Value is the effective value as text: a list or map in YAML flow
	// style ("[a, b]", "{url: 'https://id.example.com', audiences: [c]}"),
	// anything else as written. A key that holds a Secret, or a list or map
	// of values that hold one, shows "[redacted]" when set to something and
	// "" otherwise.
	Value string
	// Raw is the effective value as the layer gave it, for tools that print
	// it in another format: a string, bool or number, or a []any or
	// map[string]any for a list or map. It is nil for a key that holds a
	// Secret and for a key no layer set.
	Raw any
	// Source is the layer that set the value; SourceUnset for a key of T that
	// no layer set, whose Value is then the zero value of its type.
	Source Source
	// SecretFile is, for a key that holds a Secret set to a "file:"
	// reference, the path of the file the secret is read from; a path
	// reveals nothing, and tells a secret mounted from a file from one
	// written in the configuration. It is empty for every other key.
	SecretFile string
}

// Explain loads the configuration of type T as Load does and returns every
// effective key, sorted by key: each key a layer set, and each key of T that
// none did. Values of Secret keys that are set are "[redacted]".
//
// When the configuration is invalid Explain returns the entries it could
// build together with the *Error, so a tool can show what was set where;
// unknown keys are listed too. Other errors return no entries. Warnings go
// to the logger of WithLogger, as for Load. Explain is safe for concurrent
// use.
func Explain[T any](ctx context.Context, opts ...Option) ([]Entry, error) {
	o := newOptions(opts)
	_, st, err := load[T](ctx, o)
	st.logWarnings(ctx, o.logger)
	if st == nil {
		return nil, err
	}
	var entries []Entry
	seen := map[string]bool{}
	for key, val := range st.flat {
		e := Entry{Key: key, Value: text(val), Raw: val, Source: st.src[key]}
		if n := st.schema.resolve(key).n; n != nil && n.secret {
			if ref, ok := val.(string); ok {
				if path, isFile := strings.CutPrefix(ref, "file:"); isFile {
					e.SecretFile = path
				}
			}
			e.Raw = nil
			if e.Value != "" {
				e.Value = redacted
			}
		}
		entries = append(entries, e)
		for p := key; p != ""; p = p[:max(strings.LastIndexByte(p, '.'), 0)] {
			seen[p] = true
		}
	}
	st.schema.leaves(func(n *node) {
		if seen[n.path] {
			return
		}
		v := ""
		switch {
		case n.secret:
		case n.kind == leafNode && !slices.Contains([]reflect.Kind{reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface}, n.typ.Kind()):
			v = fmt.Sprint(reflect.Zero(n.typ).Interface())
		}
		entries = append(entries, Entry{Key: n.path, Value: v})
	})
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return entries, err
}

// text renders a value of the merged tree: lists and maps in YAML flow
// style, on one line, and anything else as fmt prints it.
func text(v any) string {
	if v == nil {
		return ""
	}
	if k := reflect.TypeOf(v).Kind(); k == reflect.Slice || k == reflect.Map {
		var n yaml.Node
		if err := n.Encode(v); err == nil {
			n.Style = yaml.FlowStyle
			if b, err := yaml.Marshal(&n); err == nil {
				return strings.TrimSuffix(string(b), "\n")
			}
		}
	}
	return fmt.Sprint(v)
}
