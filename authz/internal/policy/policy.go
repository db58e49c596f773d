// Package policy is the role policy engine of package authz: it checks
// permission names and patterns and answers which role grants a
// permission. It knows nothing of gRPC, principals or telemetry.
package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/loamhq/loam/authn"
)

// ValidPermission reports whether s is a permission name: two or more
// dot-separated segments, each a lower-case letter followed by lower-case
// letters, digits and underscores ("captures.create"). It is the rule that
// package proto/loam/options applies to the access option.
func ValidPermission(s string) bool { return segments(s) >= 2 }

// ValidPattern reports whether s may appear in a role's permission list:
// a permission, a permission prefix followed by ".*" ("captures.*",
// "captures.images.*"), or "*".
func ValidPattern(s string) bool {
	if s == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(s, ".*"); ok {
		return segments(prefix) >= 1
	}
	return ValidPermission(s)
}

// segments returns the number of well-formed segments of s, or 0 when s
// is not a dot-separated list of [a-z][a-z0-9_]* segments.
func segments(s string) int {
	n, start := 0, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if start {
				return 0
			}
			start = true
		case start:
			if c < 'a' || c > 'z' {
				return 0
			}
			start = false
			n++
		case (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_':
		default:
			return 0
		}
	}
	if start {
		return 0
	}
	return n
}

// Policy maps role names to the permissions they grant. It is immutable
// and safe for concurrent use.
type Policy struct {
	roles map[string]*grant
	src   map[string][]string
}

type grant struct {
	all      bool
	exact    map[string]struct{}
	prefixes []string // with their trailing dot: "captures."
}

// New checks roles and compiles it. Every problem is reported, joined,
// naming the role and the index of the bad pattern ("roles.viewer[1]").
func New(roles map[string][]string) (*Policy, error) {
	p := &Policy{roles: make(map[string]*grant, len(roles)), src: make(map[string][]string, len(roles))}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(roles)) {
		if name == "" {
			errs = append(errs, errors.New("roles: a role name is empty"))
			continue
		}
		g := &grant{exact: map[string]struct{}{}}
		for i, pat := range roles[name] {
			if !ValidPattern(pat) {
				errs = append(errs, fmt.Errorf("roles.%s[%d]: %q is not a permission (\"captures.create\"), a wildcard (\"captures.*\") or \"*\"", name, i, pat))
				continue
			}
			switch prefix, wild := strings.CutSuffix(pat, "*"); {
			case pat == "*":
				g.all = true
			case wild:
				g.prefixes = append(g.prefixes, prefix)
			default:
				g.exact[pat] = struct{}{}
			}
		}
		p.roles[name] = g
		p.src[name] = slices.Clone(roles[name])
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// Grant returns the first of roles that grants permission, in the order
// given. Roles the policy does not name grant nothing.
func (p *Policy) Grant(roles authn.Strings, permission string) (string, bool) {
	for i := range roles.Len() {
		r := roles.At(i)
		g := p.roles[r]
		if g != nil && g.grants(permission) {
			return r, true
		}
	}
	return "", false
}

func (g *grant) grants(permission string) bool {
	if g.all {
		return true
	}
	if _, ok := g.exact[permission]; ok {
		return true
	}
	for _, prefix := range g.prefixes {
		if strings.HasPrefix(permission, prefix) {
			return true
		}
	}
	return false
}

// Flags returns, sorted by role, the entries of the policy that grant
// nothing declared or everything: an exact permission not in declared, a
// wildcard that matches none of declared, and "*".
func (p *Policy) Flags(declared map[string]bool) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(p.src)) {
		for i, pat := range p.src[name] {
			key := fmt.Sprintf("roles.%s[%d]", name, i)
			switch prefix, wild := strings.CutSuffix(pat, "*"); {
			case pat == "*":
				out = append(out, fmt.Sprintf("%s: \"*\" grants every permission", key))
			case wild:
				if !anyKey(declared, func(d string) bool { return strings.HasPrefix(d, prefix) }) {
					out = append(out, fmt.Sprintf("%s: %q matches no permission that a method rule declares", key, pat))
				}
			case !declared[pat]:
				out = append(out, fmt.Sprintf("%s: %q is not a permission that a method rule declares", key, pat))
			}
		}
	}
	return out
}

func anyKey(m map[string]bool, f func(string) bool) bool {
	for k := range m {
		if f(k) {
			return true
		}
	}
	return false
}

// Table answers, for a fixed list of permissions, which roles grant each,
// faster than Grant: a short list of role names per permission, or a set
// when the list is long.
type Table []granters

type granters struct {
	list []string
	set  map[string]struct{} // when list is long
}

// maxList is the longest role list scanned linearly.
const maxList = 8

// Table returns the granting roles of each of permissions, in order.
func (p *Policy) Table(permissions []string) Table {
	t := make(Table, len(permissions))
	for i, perm := range permissions {
		for _, name := range slices.Sorted(maps.Keys(p.roles)) {
			if p.roles[name].grants(perm) {
				t[i].list = append(t[i].list, name)
			}
		}
		if len(t[i].list) > maxList {
			t[i].set = make(map[string]struct{}, len(t[i].list))
			for _, r := range t[i].list {
				t[i].set[r] = struct{}{}
			}
		}
	}
	return t
}

// Grant returns the first of roles that grants permission i of the
// table, like Policy.Grant.
func (t Table) Grant(i int, roles authn.Strings) (string, bool) {
	g := &t[i]
	for j := range roles.Len() {
		r := roles.At(j)
		if g.set != nil {
			if _, ok := g.set[r]; ok {
				return r, true
			}
		} else if slices.Contains(g.list, r) {
			return r, true
		}
	}
	return "", false
}
