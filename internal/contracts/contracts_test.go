package contracts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// root returns the repository root.
func root(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// copyTree copies the named files and directories of the repository into a
// new temporary directory and returns it.
func copyTree(t *testing.T, paths ...string) string {
	t.Helper()
	src, dst := root(t), t.TempDir()
	for _, p := range paths {
		cmd := exec.Command("cp", "-r", "--parents", p, dst)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("copying %s: %v: %s", p, err, out)
		}
	}
	return dst
}

// run runs a repository script in dir and returns its combined output and
// whether it succeeded.
func run(t *testing.T, dir, script string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, script), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("running %s: %v", script, err)
	}
	return string(out), err == nil
}

// edit replaces old with new in the file at path, which must contain old.
func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildFiles are what scripts/buf and scripts/generate need to run.
var buildFiles = []string{"go.mod", "tools", "scripts", "buf.yaml", "buf.gen.yaml", "proto", "examples/proto"}

const optionsProto = "proto/loam/options/v1/options.proto"

// TestBreakingRejects edits a copy of options.proto and checks that buf
// breaking, with the repository's buf.yaml, accepts compatible edits and
// rejects breaking ones with the rule that caught them. The edits touch
// fields that no example contract sets, so the copy still compiles and the
// rejection comes from the breaking rules, not from the compiler. (buf does
// not flag a renumbered extension; TestGeneratedDescriptor in
// proto/loam/options pins the numbers instead.)
func TestBreakingRejects(t *testing.T) {
	tests := []struct {
		name     string
		old, new string
		wantRule string // empty: the edit is compatible
	}{
		{
			name:     "removed field",
			old:      "  string runbook_url = 5;\n",
			new:      "",
			wantRule: "FIELD_NO_DELETE",
		},
		{
			name:     "changed field type",
			old:      "  repeated string consumes = 7;\n",
			new:      "  repeated int64 consumes = 7;\n",
			wantRule: "FIELD_SAME_TYPE",
		},
		{
			name:     "renamed field",
			old:      "  string runbook_url = 5;\n",
			new:      "  string runbook_link = 5;\n",
			wantRule: "FIELD_SAME_NAME",
		},
		{
			name:     "removed enum value",
			old:      "  TIER_EXPERIMENTAL = 4;\n",
			new:      "",
			wantRule: "ENUM_VALUE_NO_DELETE",
		},
		{
			name: "added field",
			old:  "  repeated string consumes = 7;\n",
			new:  "  repeated string consumes = 7;\n  // slack_channel is where the owner talks.\n  string slack_channel = 8;\n",
		},
	}
	before := copyTree(t, buildFiles...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after := copyTree(t, buildFiles...)
			edit(t, filepath.Join(after, optionsProto), tt.old, tt.new)
			out, ok := run(t, after, "scripts/buf", "breaking", after, "--against", before, "--error-format", "json")
			if tt.wantRule == "" {
				if !ok {
					t.Errorf("buf breaking rejected a compatible edit:\n%s", out)
				}
				return
			}
			if ok {
				t.Fatalf("buf breaking accepted a breaking edit (%s), want %s", tt.name, tt.wantRule)
			}
			if !strings.Contains(out, `"type":"`+tt.wantRule+`"`) || !strings.Contains(out, optionsProto) {
				t.Errorf("buf breaking output = %q, want it to name %s in options.proto", out, tt.wantRule)
			}
		})
	}
}

// TestFreshnessCheck shows that scripts/generate --check passes on the
// committed tree and fails, naming the file, on every way generated code can
// drift from its contract.
func TestFreshnessCheck(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   string // substring of the failure; empty means the check passes
	}{
		{
			name:   "committed tree is fresh",
			mutate: func(*testing.T, string) {},
		},
		{
			name: "generated file edited by hand",
			mutate: func(t *testing.T, dir string) {
				edit(t, filepath.Join(dir, "proto/loam/options/v1/options.pb.go"), "package optionsv1", "package optionsv1\n\n// hand-made tweak")
			},
			want: "proto/loam/options/v1/options.pb.go",
		},
		{
			name: "generated file deleted",
			mutate: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "examples/proto/captures/v1/captures_grpc.pb.go")); err != nil {
					t.Fatal(err)
				}
			},
			want: "captures_grpc.pb.go",
		},
		{
			name: "contract changed without regenerating",
			mutate: func(t *testing.T, dir string) {
				edit(t, filepath.Join(dir, optionsProto), "  repeated string consumes = 7;\n", "  repeated string consumes = 7;\n  // team_size is new.\n  int32 team_size = 8;\n")
			},
			want: "proto/loam/options/v1/options.pb.go",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyTree(t, buildFiles...)
			tt.mutate(t, dir)
			out, ok := run(t, dir, "scripts/generate", "--check")
			if tt.want == "" {
				if !ok {
					t.Errorf("scripts/generate --check failed on a fresh tree:\n%s", out)
				}
				return
			}
			if ok {
				t.Fatalf("scripts/generate --check passed, want it to fail naming %s", tt.want)
			}
			if !strings.Contains(out, tt.want) || !strings.Contains(out, "run scripts/generate") {
				t.Errorf("scripts/generate --check output = %q, want it to name %s and the fix", out, tt.want)
			}
		})
	}
}
