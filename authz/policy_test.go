package authz_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
)

func TestSetPolicy(t *testing.T) {
	a := newFarm(t, authz.Config{Roles: map[string][]string{"farmer": {"farm.harvest"}}})
	bob := principal("bob", "farmer")
	harvest := fullMethod(farm, "Harvest")
	allowed := func() bool { return a.Explain(bob, harvest, nil).Allowed }
	if !allowed() {
		t.Fatal("Explain(Harvest) denied with the initial policy")
	}

	bad := []struct {
		name  string
		roles map[string][]string
		want  string
	}{
		{"upper case", map[string][]string{"farmer": {"Farm.*"}}, `roles.farmer[0]: "Farm.*" is not a permission`},
		{"wildcard inside", map[string][]string{"farmer": {"farm.harvest", "farm.*.read"}}, `roles.farmer[1]: "farm.*.read"`},
		{"empty permission", map[string][]string{"farmer": {""}}, `roles.farmer[0]: "" is not a permission`},
		{"single segment", map[string][]string{"farmer": {"farm"}}, `roles.farmer[0]: "farm"`},
		{"empty role name", map[string][]string{"": {"farm.harvest"}}, "a role name is empty"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			err := a.SetPolicy(tt.roles)
			if !errors.Is(err, authz.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("SetPolicy(%v) = %v, want ErrInvalidConfig containing %q", tt.roles, err, tt.want)
			}
			if !allowed() {
				t.Errorf("after SetPolicy(%v) failed, Harvest is denied: the last good policy must stay", tt.roles)
			}
		})
	}

	if err := a.SetPolicy(map[string][]string{"farmer": {"farm.plant"}}); err != nil {
		t.Fatalf("SetPolicy(valid) = %v", err)
	}
	if allowed() {
		t.Error("after SetPolicy without farm.harvest, Harvest is still allowed")
	}
}

func TestWarnings(t *testing.T) {
	a := newFarm(t, authz.Config{Roles: map[string][]string{
		"admin":  {"*"},
		"farmer": {"farm.*", "farm.milk", "barn.*"},
		"ok":     {"farm.harvest"},
	}})
	want := []string{
		`roles.admin[0]: "*" grants every permission`,
		`roles.farmer[1]: "farm.milk" is not a permission that a method rule declares`,
		`roles.farmer[2]: "barn.*" matches no permission that a method rule declares`,
	}
	if diff := cmp.Diff(want, a.Warnings()); diff != "" {
		t.Errorf("Warnings() mismatch (-want +got):\n%s", diff)
	}
	if err := a.SetPolicy(map[string][]string{"ok": {"farm.plant"}}); err != nil {
		t.Fatal(err)
	}
	if got := a.Warnings(); len(got) != 0 {
		t.Errorf("Warnings() after SetPolicy = %q, want none", got)
	}

	// A permission that handlers check is declared in the section.
	a = newFarm(t, authz.Config{
		Roles:              map[string][]string{"farmer": {"farm.milk", "barn.*"}},
		HandlerPermissions: []string{"farm.milk", "barn.open"},
	})
	if got := a.Warnings(); len(got) != 0 {
		t.Errorf("Warnings() with handler permissions declared = %q, want none", got)
	}
}

// TestSetPolicyConcurrent swaps policies while calls are decided; run with
// -race. Every decision must match one of the two policies.
func TestSetPolicyConcurrent(t *testing.T) {
	a := newFarm(t, authz.Config{})
	policies := []map[string][]string{{"farmer": {"farm.*"}}, {"farmer": {"farm.harvest"}}, {"farmer": {"Bad.*"}}}
	ctx := authn.NewContext(context.Background(), principal("bob", "farmer"))
	info := &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Harvest")}
	ok := func(ctx context.Context, req any) (any, error) { return req, nil }

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := a.UnaryInterceptor(ctx, plantRequest("", 1), info, ok); err != nil {
					t.Errorf("UnaryInterceptor(Harvest) = %v, want nil under every valid policy", status.Code(err))
					return
				}
			}
		})
	}
	for i := range 301 { // ends on policies[0]
		err := a.SetPolicy(policies[i%len(policies)])
		if (err != nil) != (i%len(policies) == 2) {
			t.Errorf("SetPolicy(%v) = %v", policies[i%len(policies)], err)
		}
	}
	close(stop)
	wg.Wait()
	if _, err := a.UnaryInterceptor(ctx, plantRequest("", 1), &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Upload")}, ok); status.Code(err) != codes.OK {
		t.Errorf("UnaryInterceptor(Upload) after the swaps = %v, want OK under farm.*", err)
	}
}
