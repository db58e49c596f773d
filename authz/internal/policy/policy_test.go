package policy_test

import (
	"fmt"
	"testing"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz/internal/policy"
)

func TestValidPattern(t *testing.T) {
	tests := []struct {
		pattern string
		want    bool
	}{
		{"captures.create", true},
		{"captures.images.delete", true},
		{"captures.*", true},
		{"captures.images.*", true},
		{"*", true},
		{"a1_b.c2", true},
		{"", false},
		{"captures", false},
		{"Captures.*", false},
		{"captures.*.read", false},
		{"captures.", false},
		{".captures", false},
		{"captures..create", false},
		{"*.create", false},
		{"captures.**", false},
		{"1captures.create", false},
		{"captures.cre-ate", false},
	}
	for _, tt := range tests {
		if got := policy.ValidPattern(tt.pattern); got != tt.want {
			t.Errorf("ValidPattern(%q) = %v, want %v", tt.pattern, got, tt.want)
		}
	}
}

// TestTable: Table.Grant answers as Grant does, with short role lists and
// with a set.
func TestTable(t *testing.T) {
	roles := map[string][]string{"exact": {"a.b"}, "wild": {"a.*"}, "star": {"*"}, "other": {"c.d"}}
	for i := range 10 {
		roles[fmt.Sprintf("many%d", i)] = []string{"c.d"}
	}
	p, err := policy.New(roles)
	if err != nil {
		t.Fatal(err)
	}
	perms := []string{"a.b", "a.x.y", "c.d", "e.f"}
	table := p.Table(perms)
	for _, roles := range [][]string{nil, {"exact"}, {"wild"}, {"other", "star"}, {"many7"}, {"ghost", "many3", "exact"}} {
		principal := authn.NewPrincipal(authn.Identity{Roles: roles}).Roles()
		for i, perm := range perms {
			wantRole, want := p.Grant(principal, perm)
			if gotRole, got := table.Grant(i, principal); got != want || gotRole != wantRole {
				t.Errorf("Table.Grant(%q, %v) = %q, %v, want %q, %v", perm, principal, gotRole, got, wantRole, want)
			}
		}
	}
	if role, ok := p.Grant(authn.NewPrincipal(authn.Identity{Roles: []string{"many3"}}).Roles(), "c.d"); !ok || role != "many3" {
		t.Errorf("Grant(c.d, [many3]) = %q, %v, want many3, true", role, ok)
	}
}
