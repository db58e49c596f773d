package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

type matchKind int

const (
	matchLeaf          matchKind = iota // the key is a leaf
	matchMap                            // the key is inside a map or remain node
	matchSection                        // the key is a section
	matchUnknown                        // no field has the key (path is the first unknown part)
	matchLeafAsSection                  // the key is below a leaf (path is the leaf)
)

// match is where a flat key lands in the schema.
type match struct {
	kind matchKind
	n    *node  // the leaf, map or remain node; the section for matchSection
	sec  *node  // the innermost section walked
	path string // the key path the value or the problem belongs to
}

// resolve finds where the flat key lands.
func (sc *schema) resolve(key string) match {
	segs := strings.Split(key, ".")
	sec := sc.root
	for i, seg := range segs {
		path := strings.Join(segs[:i+1], ".")
		c, ok := sec.children[seg]
		switch {
		case !ok && sec.remain != nil:
			return match{kind: matchMap, n: sec.remain, sec: sec, path: path}
		case !ok:
			return match{kind: matchUnknown, sec: sec, path: path}
		case c.kind == mapNode:
			return match{kind: matchMap, n: c, sec: sec, path: c.path}
		case c.kind == leafNode && i == len(segs)-1:
			return match{kind: matchLeaf, n: c, sec: sec, path: path}
		case c.kind == leafNode:
			return match{kind: matchLeafAsSection, n: c, sec: sec, path: path}
		}
		sec = c
	}
	return match{kind: matchSection, n: sec, sec: sec, path: key}
}

// decode sets every key of the merged tree into root, recording unknown
// keys and type errors.
func (st *state) decode(root reflect.Value) {
	keys := make([]string, 0, len(st.flat))
	for k := range st.flat {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	done := map[string]bool{}
	for _, key := range keys {
		val := st.flat[key]
		m := st.schema.resolve(key)
		switch m.kind {
		case matchUnknown:
			st.fail(m.path, st.src[m.path], "is not a known key"+suggest(m.sec, m.path))
		case matchLeafAsSection:
			st.fail(m.path, st.src[key], "takes a single value, not a section of keys")
		case matchSection:
			if mp, ok := val.(map[string]any); val != nil && !(ok && len(mp) == 0) {
				st.fail(m.path, st.src[key], fmt.Sprintf("is a section of keys, not the single value %s", show(val, false)))
			}
		case matchLeaf:
			if val != nil {
				st.set(root, m.n, m.path, val)
			}
		case matchMap:
			if done[m.n.path] {
				continue
			}
			done[m.n.path] = true
			if m.n != m.sec.remain {
				st.set(root, m.n, m.path, st.k.Get(m.path))
				continue
			}
			tree := st.k.Raw()
			if m.sec.path != "" {
				tree, _ = st.k.Get(m.sec.path).(map[string]any)
			}
			rest := map[string]any{}
			for k, v := range tree {
				if _, named := m.sec.children[k]; named {
					continue
				}
				if name, _ := closest(m.sec, k); misspelt(k, name) {
					p := join(m.sec.path, k)
					st.fail(p, st.sourceOf(p), "is not a known key"+suggest(m.sec, p))
					continue
				}
				rest[k] = v
			}
			st.set(root, m.n, m.path, rest)
		}
	}
}

// set converts raw to n's type and stores it in root.
func (st *state) set(root reflect.Value, n *node, path string, raw any) {
	if ref, ok := raw.(string); ok && st.secretRefs && n.typ == secretType && strings.HasPrefix(ref, "file:") {
		field(root, n.index).Set(reflect.ValueOf(NewSecret(ref)))
		return
	}
	v, err := convert(raw, n.typ)
	if err != nil {
		st.fail(path, st.sourceOf(path), convertMsg(err, raw, n))
		return
	}
	field(root, n.index).Set(v)
}

// sourceOf is the source of path, or of the first key below it.
func (st *state) sourceOf(path string) Source {
	if i := strings.IndexByte(path, '['); i >= 0 {
		path = path[:i]
	}
	if s, ok := st.src[path]; ok {
		return s
	}
	keys := make([]string, 0)
	for k := range st.src {
		if strings.HasPrefix(k, path+".") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return Source{}
	}
	return st.src[slices.Min(keys)]
}

// valueError is a conversion failure whose message is final.
type valueError struct{ msg string }

func (e *valueError) Error() string { return e.msg }

// convert decodes raw into a new value of type t, with mapstructure and
// Loam's hooks: range-checked integers, durations with units, secrets.
func convert(raw any, t reflect.Type) (reflect.Value, error) {
	out := reflect.New(t).Elem()
	_, isText := raw.(string)
	isText = isText && reflect.PointerTo(t).Implements(textType)
	switch k := t.Kind(); {
	case t != durationType && !isText && k >= reflect.Int && k <= reflect.Int64:
		i, err := toInt(raw)
		if err == nil && out.OverflowInt(i) {
			err = &valueError{fmt.Sprintf("%d is out of range for %s", i, t)}
		}
		if err != nil {
			return out, err
		}
		out.SetInt(i)
		return out, nil
	case !isText && k >= reflect.Uint && k <= reflect.Uint64:
		i, err := toInt(raw)
		if err == nil && (i < 0 || out.OverflowUint(uint64(i))) {
			err = &valueError{fmt.Sprintf("%d is out of range for %s", i, t)}
		}
		if err != nil {
			return out, err
		}
		out.SetUint(uint64(i))
		return out, nil
	}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           out.Addr().Interface(),
		TagName:          "koanf",
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			secretHook,
			durationHook,
			mapstructure.StringToSliceHookFunc(","),
			mapstructure.TextUnmarshallerHookFunc(),
		),
	})
	if err != nil {
		return out, err
	}
	return out, dec.Decode(raw)
}

// toInt reads a whole number from a parsed value or a string.
func toInt(raw any) (int64, error) {
	bad := &valueError{fmt.Sprintf("%s is not a whole number", show(raw, false))}
	switch v := raw.(type) {
	case int:
		return int64(v), nil
	case int64:
		return v, nil
	case uint64:
		if v > math.MaxInt64 {
			return 0, &valueError{fmt.Sprintf("%d is out of range", v)}
		}
		return int64(v), nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > math.MaxInt64 {
			return 0, bad
		}
		return int64(v), nil
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
		if err != nil {
			return 0, bad
		}
		return i, nil
	}
	return 0, bad
}

func secretHook(_, to reflect.Type, data any) (any, error) {
	if to != secretType {
		return data, nil
	}
	switch v := data.(type) {
	case Secret:
		return v, nil
	case nil:
		return Secret{}, nil
	case string:
		return readSecret(v)
	default:
		return readSecret(fmt.Sprint(v))
	}
}

// readSecret resolves a "file:" reference, or wraps the value as it is.
func readSecret(v string) (Secret, error) {
	path, ok := strings.CutPrefix(v, "file:")
	if !ok {
		return NewSecret(v), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		return Secret{}, &valueError{fmt.Sprintf("secret file %q cannot be read: %v", path, err)}
	}
	return NewSecret(strings.TrimSuffix(string(data), "\n")), nil
}

func durationHook(_, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, &valueError{fmt.Sprintf("%q is not a duration (write it like 1m30s)", v)}
		}
		return d, nil
	case int, int64, uint64, float64:
		if v == 0 || v == 0.0 {
			return time.Duration(0), nil
		}
		return nil, &valueError{fmt.Sprintf("%v is not a duration: give it a unit, like %vs", v, v)}
	}
	return data, nil
}

// convertMsg turns a conversion failure into a message.
func convertMsg(err error, raw any, n *node) string {
	if ve := (*valueError)(nil); errors.As(err, &ve) {
		return ve.msg
	}
	msg := fmt.Sprintf("%s is not a valid %s", show(raw, n.secret), describe(n.typ))
	if k := n.typ.Kind(); k == reflect.Slice || k == reflect.Map || k == reflect.Array {
		msg += ": " + err.Error()
	}
	return msg
}

func describe(t reflect.Type) string {
	switch k := t.Kind(); {
	case t == durationType:
		return "duration"
	case k >= reflect.Int && k <= reflect.Int64:
		return "whole number"
	case k == reflect.Float32 || k == reflect.Float64:
		return "number"
	case k == reflect.Bool:
		return "boolean (true or false)"
	case k == reflect.String:
		return "string"
	case k == reflect.Slice || k == reflect.Array:
		return "list"
	case k == reflect.Map:
		return "map of keys"
	}
	return t.String()
}

// show renders a value for a message: strings quoted, secrets never shown.
func show(v any, secret bool) string {
	if secret {
		return "the secret value"
	}
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// suggest proposes the sibling key closest to the unknown one, when it is
// at most two edits away.
func suggest(sec *node, path string) string {
	best, d := closest(sec, path[strings.LastIndexByte(path, '.')+1:])
	if best == "" || d > 2 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", join(sec.path, best))
}

// closest returns the key of sec nearest to seg, the first in order among
// equals, and its distance; "" when sec has no keys.
func closest(sec *node, seg string) (best string, dist int) {
	for name := range sec.children {
		if d := distance(seg, name); best == "" || d < dist || d == dist && name < best {
			best, dist = name, d
		}
	}
	return best, dist
}

// misspelt reports whether key is likely a misspelling of name rather than
// a name of its own: one edit away, or two when name has six letters or
// more. A remain map does not take such a key: it is unknown, with a
// suggestion.
func misspelt(key, name string) bool {
	if name == "" || key == name {
		return false
	}
	d := distance(key, name)
	return d <= 1 || d == 2 && len(name) >= 6
}

// distance is the optimal string alignment distance between a and b: the
// Levenshtein distance where swapping two neighbouring letters ("servcie")
// counts as one edit.
func distance(a, b string) int {
	rows := [3][]int{} // the rows for a[:i-2], a[:i-1] and a[:i]
	for r := range rows {
		rows[r] = make([]int, len(b)+1)
	}
	for j := range rows[1] {
		rows[1][j] = j
	}
	for i := 1; i <= len(a); i++ {
		pp, prev, cur := rows[0], rows[1], rows[2]
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], pp[j-2]+1)
			}
		}
		rows[0], rows[1], rows[2] = prev, cur, pp
	}
	return rows[1][len(b)]
}
