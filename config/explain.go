package config

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Entry is one effective key of a configuration, as Explain reports it.
type Entry struct {
	// Key is the key path, like "service.port". Keys inside maps are listed
	// one by one ("labels.team").
	Key string
	// Value is the effective value as text; "[redacted]" for a Secret.
	Value string
	// Source is the layer that set the value; SourceUnset for a key of T that
	// no layer set, whose Value is then the zero value of its type.
	Source Source
}

// Explain loads the configuration of type T as Load does and returns every
// effective key, sorted by key: each key a layer set, and each key of T that
// none did. Values of Secret keys are "[redacted]".
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
		n := st.schema.resolve(key).n
		v := fmt.Sprint(val)
		switch {
		case val == nil:
			v = ""
		case n != nil && n.secret:
			v = redacted
		}
		entries = append(entries, Entry{Key: key, Value: v, Source: st.src[key]})
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
			v = redacted
		case n.kind == leafNode && !slices.Contains([]reflect.Kind{reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface}, n.typ.Kind()):
			v = fmt.Sprint(reflect.Zero(n.typ).Interface())
		}
		entries = append(entries, Entry{Key: n.path, Value: v})
	})
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return entries, err
}
