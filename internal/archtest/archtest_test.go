package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const module = "github.com/loamhq/loam"

// TestDependencyDirection is the guard itself: Loam's real import graph,
// test imports included, must follow the floors.
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	pkgs, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("List(%s) found %d packages, want the whole module", root, len(pkgs))
	}
	for _, p := range Check(module, pkgs) {
		t.Error(p)
	}
}

// TestCheckRejects builds a throwaway module with the same path and layout
// as Loam, plants one deliberate bad import in it, and checks that the real
// `go list` graph of that module is rejected for the right reason.
func TestCheckRejects(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // path to file body after the package clause
		want  []string
	}{
		{
			name: "upward import",
			files: map[string]string{
				"service/service.go": ``,
				"config/config.go":   `import _ "github.com/loamhq/loam/service"`,
			},
			want: []string{"github.com/loamhq/loam/config (floor 1) imports github.com/loamhq/loam/service (floor 3): imports must point down"},
		},
		{
			name: "upward import from a test",
			files: map[string]string{
				"examples/demo/demo.go": ``,
				"authn/authn_test.go":   `import _ "github.com/loamhq/loam/examples/demo"`,
			},
			want: []string{"github.com/loamhq/loam/authn (floor 2) test imports github.com/loamhq/loam/examples/demo (floor 5): imports must point down"},
		},
		{
			name: "sideways import between floor-2 packages",
			files: map[string]string{
				"cache/cache.go":   ``,
				"events/events.go": `import _ "github.com/loamhq/loam/cache"`,
			},
			want: []string{"github.com/loamhq/loam/events (floor 2) imports github.com/loamhq/loam/cache (same floor): packages on one floor do not import each other"},
		},
		{
			name: "the one allowed sideways arrow runs one way only",
			files: map[string]string{
				"authz/authz.go": ``,
				"authn/authn.go": `import _ "github.com/loamhq/loam/authz"`,
			},
			want: []string{"github.com/loamhq/loam/authn (floor 2) imports github.com/loamhq/loam/authz (same floor): packages on one floor do not import each other"},
		},
		{
			name: "package without a floor",
			files: map[string]string{
				"internal/shortcut/s.go": ``,
			},
			want: []string{"github.com/loamhq/loam/internal/shortcut has no floor: add it to archtest.Floors and ARCHITECTURE.md"},
		},
		{
			name: "downward, allowed and internal imports pass",
			files: map[string]string{
				"proto/loam/options/o.go":     ``,
				"config/config.go":            `import _ "github.com/loamhq/loam/proto/loam/options"`,
				"authn/authn.go":              `import _ "github.com/loamhq/loam/config"`,
				"authz/authz.go":              `import _ "github.com/loamhq/loam/authn"`,
				"events/internal/wire/w.go":   ``,
				"events/driver/driver.go":     `import _ "github.com/loamhq/loam/events/internal/wire"`,
				"events/events.go":            `import _ "github.com/loamhq/loam/events/driver"`,
				"service/service.go":          `import _ "github.com/loamhq/loam/authz"`,
				"cmd/loam/main.go":            `import _ "github.com/loamhq/loam/service"`,
				"examples/captures/main.go":   `import _ "github.com/loamhq/loam/service"`,
				"service/service_test.go":     `import _ "github.com/loamhq/loam/internal/testenv"`,
				"internal/testenv/testenv.go": ``,
			},
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "go.mod"), "module "+module+"\n\ngo 1.26\n")
			for path, body := range tt.files {
				pkg := filepath.Base(filepath.Dir(path))
				if filepath.Dir(path) == "cmd/loam" || strings.HasPrefix(path, "examples/") {
					pkg = "main"
					body += "\nfunc main() {}\n"
				}
				write(t, filepath.Join(dir, path), "package "+pkg+"\n\n"+body+"\n")
			}
			pkgs, err := List(dir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, Check(module, pkgs)); diff != "" {
				t.Errorf("Check() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
