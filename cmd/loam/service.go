package main

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/service"
)

// entry is one key as the command shows it: config's entry, with secrets
// of application sections hidden and, for a setting the server derives,
// the value it derives.
type entry struct {
	config.Entry
	// derived marks a value that service.Config.Effective gives instead of
	// the one the layers set (Source), or left unset.
	derived bool
	// compare is the value diff compares: Value before the command hid it.
	compare string
}

// source is the SOURCE column: config's source, or "derived", followed by
// the layer that set the value the server replaced, if any.
func (e entry) source() string {
	switch {
	case !e.derived:
		return e.Source.String()
	case e.Source.Kind == config.SourceUnset:
		return "derived"
	}
	return "derived from " + e.Source.String()
}

// data is the value in --json output: a list or map as JSON, anything else
// as its text.
func (e entry) data() any {
	if e.Raw != nil {
		if k := reflect.TypeOf(e.Raw).Kind(); k == reflect.Slice || k == reflect.Map {
			return e.Raw
		}
	}
	return e.Value
}

// entries turns config's entries into the command's, hiding the values of
// application keys that look secret: by the key's name, or by the name of
// a key inside a list or map it holds. Loam's own sections are typed, and
// config.Explain has hidden their config.Secret values already.
func entries(es []config.Entry) []entry {
	out := make([]entry, len(es))
	for i, e := range es {
		shown := entry{compare: e.Value}
		if !inLoamSection(e.Key) && (isSecretKey(e.Key) || holdsSecretKey(e.Raw)) {
			e.Raw = nil
			if e.Value != "" {
				e.Value = "[redacted]"
			}
		}
		shown.Entry = e
		out[i] = shown
	}
	return out
}

// holdsSecretKey reports whether a list or map from a file has, at any
// depth, a key that isSecretKey judges secret.
func holdsSecretKey(v any) bool {
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			if holdsSecretKey(x) {
				return true
			}
		}
	case map[string]any:
		for k, x := range v {
			if isSecretKey(k) || holdsSecretKey(x) {
				return true
			}
		}
	}
	return false
}

// derive replaces, in es, the values of Loam's settings that the server
// derives with the values it derives (service.Config.Effective), marking
// them derived. cfg is the configuration loaded from the files of env; an
// environment it does not name is env, as when LOAM_ENV names it.
func derive(es []entry, cfg service.Config, env string) {
	loaded := reflect.ValueOf(cfg) // a copy, as the files left it
	if cfg.Service.Environment == "" {
		cfg.Service.Environment = env
	}
	effective := reflect.ValueOf(cfg.Effective())
	for i, e := range es {
		was, ok := fieldByKey(loaded, e.Key)
		now, ok2 := fieldByKey(effective, e.Key)
		if !ok || !ok2 || reflect.DeepEqual(was.Interface(), now.Interface()) {
			continue
		}
		es[i].Value, es[i].Raw, es[i].derived = text(now), nil, true
		es[i].compare = es[i].Value
		if k := now.Kind(); k == reflect.Slice || k == reflect.Map {
			es[i].Raw = now.Interface()
		}
	}
}

// fieldByKey finds the value of a key path ("service.limits.max_recv_msg_bytes",
// "authz.roles.planter") in v, by the koanf tags that config.Load follows.
func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for _, seg := range strings.Split(key, ".") {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return v, false
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Struct:
			f, ok := structField(v, seg)
			if !ok {
				return v, false
			}
			v = f
		case reflect.Map:
			if v.Type().Key().Kind() != reflect.String {
				return v, false
			}
			if v = v.MapIndex(reflect.ValueOf(seg).Convert(v.Type().Key())); !v.IsValid() {
				return v, false
			}
		default:
			return v, false
		}
	}
	return v, true
}

// structField is the field of the struct v whose key is name, looking into
// embedded structs without a key of their own.
func structField(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		squash := tag == "" && (f.Anonymous || opts == "squash") && f.Type.Kind() == reflect.Struct
		switch {
		case !f.IsExported() || tag == "-" || opts == "remain":
		case tag == name, tag == "" && !squash && strings.ToLower(f.Name) == name:
			return v.Field(i), true
		case squash:
			if fv, ok := structField(v.Field(i), name); ok {
				return fv, true
			}
		}
	}
	return v, false
}

// text renders a derived value as config.Explain renders a set one: lists
// and maps in YAML flow style, a nil pointer as "", anything else as fmt
// prints it (a config.Secret as "[redacted]", or "" when empty).
func text(v reflect.Value) string {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if s, ok := v.Interface().(config.Secret); ok && s.IsZero() {
		return ""
	}
	if k := v.Kind(); k == reflect.Slice || k == reflect.Map {
		n := &yaml.Node{}
		if err := n.Encode(v.Interface()); err == nil {
			n.Style = yaml.FlowStyle
			if b, err := yaml.Marshal(n); err == nil {
				return strings.TrimSuffix(string(b), "\n")
			}
		}
	}
	return fmt.Sprint(v.Interface())
}

// serverRules reports what the server makes of cfg, the configuration
// loaded from the files of env, before it serves: the problems of
// service.Config.Validate, the check that New makes, so that the command
// and start-up never disagree; and as warnings, what start-up allows but
// likely is a mistake. An environment the files do not name is env, as when
// LOAM_ENV names it. Each finding carries the source of its key in es.
func serverRules(cfg service.Config, env string, es []entry) (problems, warnings []config.FieldError) {
	if cfg.Service.Environment == "" {
		cfg.Service.Environment = env
	}
	for _, line := range errorLines(cfg.Validate(), "") {
		key, msg, ok := strings.Cut(line, ": ")
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			key, msg = "", line
		}
		problems = append(problems, config.FieldError{Path: key, Source: sourceOf(es, key), Msg: msg})
	}
	s := cfg.Service
	if s.Environment != env {
		warnings = append(warnings, config.FieldError{Path: "service.environment", Source: sourceOf(es, "service.environment"),
			Msg: fmt.Sprintf("is %q in the files of environment %s: the server runs by the rules of %s", s.Environment, env, s.Environment)})
	}
	if s.Environment == service.Production && s.Reflection != nil && *s.Reflection {
		warnings = append(warnings, config.FieldError{Path: "service.reflection", Source: sourceOf(es, "service.reflection"),
			Msg: "is on in production, where any caller that reaches the port can list every method and message; start-up allows it, but turn it off unless that is meant"})
	}
	return problems, warnings
}

// errorLines lists the problems in err one per line, each with the prefix
// that the errors wrapping it add: errors.Join(a, fmt.Errorf("authz: %w",
// errors.Join(b, c))) gives a, "authz: b" and "authz: c".
func errorLines(err error, prefix string) []string {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var lines []string
		for _, e := range joined.Unwrap() {
			lines = append(lines, errorLines(e, prefix)...)
		}
		return lines
	}
	if inner := errors.Unwrap(err); inner != nil {
		if _, joined := inner.(interface{ Unwrap() []error }); joined {
			if p, ok := strings.CutSuffix(err.Error(), inner.Error()); ok {
				return errorLines(inner, prefix+p)
			}
		}
	}
	var lines []string
	for line := range strings.Lines(err.Error()) {
		lines = append(lines, prefix+strings.TrimSuffix(line, "\n"))
	}
	return lines
}

// sourceOf is the source of the value of key (an index such as "[0]"
// dropped) in es, or the zero Source when es has no such key.
func sourceOf(es []entry, key string) config.Source {
	key, _, _ = strings.Cut(key, "[")
	for _, e := range es {
		if e.Key == key {
			return e.Source
		}
	}
	return config.Source{}
}
