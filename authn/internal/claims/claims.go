// Package claims reads the registered and mapped claims of a verified JWT
// payload: it checks their JSON types and collects roles, groups and scopes
// from configurable claim paths.
package claims

import (
	"fmt"
	"strings"
)

// Mapper says where roles, groups and scopes live in a token. Paths are
// dot-separated ("realm_access.roles"); a claim whose whole name matches the
// path (such as "https://example.com/roles") is taken first. A path whose
// claim is absent contributes nothing; one of the wrong JSON type is an
// error.
type Mapper struct {
	Roles  []string
	Groups []string
	// Scopes accept a space-separated string or an array of strings.
	Scopes []string
}

// Generic returns the mapper for providers that follow the common names:
// "roles", "groups", and "scope" or "scp".
func Generic() Mapper {
	return Mapper{Roles: []string{"roles"}, Groups: []string{"groups"}, Scopes: []string{"scope", "scp"}}
}

// Keycloak returns the mapper for Keycloak access tokens: realm roles from
// realm_access.roles plus the client roles resource_access.<client>.roles of
// each client named, groups from "groups" (the group membership mapper), and
// scopes from "scope".
func Keycloak(clients []string) Mapper {
	m := Mapper{Roles: []string{"realm_access.roles"}, Groups: []string{"groups"}, Scopes: []string{"scope"}}
	for _, c := range clients {
		m.Roles = append(m.Roles, "resource_access."+c+".roles")
	}
	return m
}

// Mapped holds what a Mapper collected.
type Mapped struct {
	Roles, Groups, Scopes []string
}

// Map collects roles, groups and scopes from claims, without duplicates, in
// the order found.
func (m Mapper) Map(claims map[string]any) (Mapped, error) {
	var out Mapped
	var err error
	if out.Roles, err = collect(claims, m.Roles, false); err != nil {
		return out, err
	}
	if out.Groups, err = collect(claims, m.Groups, false); err != nil {
		return out, err
	}
	out.Scopes, err = collect(claims, m.Scopes, true)
	return out, err
}

func collect(claims map[string]any, paths []string, spaced bool) ([]string, error) {
	var out []string
	for _, path := range paths {
		v, ok := Lookup(claims, path)
		if !ok || v == nil {
			continue // absent, or JSON null, which says the same
		}
		vals, err := Strings(v, spaced)
		if err != nil {
			return nil, fmt.Errorf("claim %q: %w", path, err)
		}
		for _, s := range vals {
			if s != "" && !contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Lookup finds path in claims: the claim named path itself, else the
// dot-separated walk through nested objects.
func Lookup(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok {
		return v, true
	}
	var cur any = claims
	for seg := range strings.SplitSeq(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Strings reads a claim that is an array of strings or, when spaced is
// true, also a space-separated string.
func Strings(v any, spaced bool) ([]string, error) {
	switch v := v.(type) {
	case string:
		if spaced {
			return strings.Fields(v), nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("holds a %s, want strings", typeName(e))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("is a %s, want a string or an array of strings", typeName(v))
}

// typeName names the JSON type of a value decoded by encoding/json.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// String reads an optional string claim: absent is "", another type is an
// error.
func String(claims map[string]any, name string) (string, error) {
	v, ok := claims[name]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("claim %q is a %s, want a string", name, typeName(v))
	}
	return s, nil
}

// Number reads an optional NumericDate claim as seconds since the epoch.
func Number(claims map[string]any, name string) (float64, bool, error) {
	v, ok := claims[name]
	if !ok {
		return 0, false, nil
	}
	n, ok := v.(float64)
	if !ok {
		return 0, false, fmt.Errorf("claim %q is a %s, want a number", name, typeName(v))
	}
	return n, true, nil
}
