package contracts

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
// new temporary directory and returns it. A copied tools module builds
// Loam's buf plugin, which buf.yaml runs, from the repository itself: its
// replace directives, relative to the root, are made absolute, so every
// copy runs the work tree's plugin, built once rather than once a copy.
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
	if slices.Contains(paths, "tools") {
		cmd := exec.Command("go", "mod", "edit", "-modfile=tools/go.mod",
			"-replace=github.com/loamhq/loam="+src,
			"-replace=github.com/loamhq/loam/cmd/buf-plugin-loam="+filepath.Join(src, "cmd", "buf-plugin-loam"))
		cmd.Dir = dst
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pointing the copied tools module at the repository: %v: %s", err, out)
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
			old:      "  string runbook_url = 5;\n",
			new:      "  int64 runbook_url = 5;\n",
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

// pluginTestdata holds the contracts that the tests of Loam's buf plugin
// check: lint/<case>/bad/v1/bad.proto breaks the rules of one case,
// lint/good follows them all, and breaking/ holds versions of one
// contract.
const pluginTestdata = "cmd/buf-plugin-loam/testdata"

// finding is one line of buf's --error-format json output.
type finding struct {
	Path string `json:"path"`
	Type string `json:"type"`
}

// findings runs scripts/buf with args in dir and returns the Loam rules it
// reported, by file, and whether it succeeded.
func findings(t *testing.T, dir string, args ...string) (map[string][]string, bool) {
	t.Helper()
	out, ok := run(t, dir, "scripts/buf", append(args, "--error-format", "json")...)
	byPath := map[string][]string{}
	for line := range strings.Lines(out) {
		var f finding
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("buf output line %q: %v\n%s", line, err, out)
		}
		if strings.HasPrefix(f.Type, "LOAM_") && !slices.Contains(byPath[f.Path], f.Type) {
			byPath[f.Path] = append(byPath[f.Path], f.Type)
		}
	}
	return byPath, ok
}

// addContract copies the plugin's test contract src into the examples'
// module of dir as <pkg>/v1/<pkg>.proto, in package <pkg>.v1, and returns
// its path.
func addContract(t *testing.T, dir, src, pkg string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), pluginTestdata, src))
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?m)^package \w+\.v1;`).ReplaceAllString(string(b), "package "+pkg+".v1;")
	path := filepath.Join("examples/proto", pkg, "v1", pkg+".proto")
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, path), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoamRules shows that scripts/buf, configured by buf.yaml, runs
// Loam's plugin: buf lint passes on the repository's contracts and fails
// on a contract that breaks each of Loam's lint rules, naming the rule;
// buf breaking fails on each breaking change that Loam's breaking rules
// catch, and passes on compatible changes. It builds buf and the plugin,
// so it runs only with LOAM_TEST_TOOLS=1, as in CI.
func TestLoamRules(t *testing.T) {
	if os.Getenv("LOAM_TEST_TOOLS") != "1" {
		t.Skip("builds buf and Loam's buf plugin; set LOAM_TEST_TOOLS=1 to run it")
	}
	t.Run("lint", func(t *testing.T) {
		dir := copyTree(t, buildFiles...)
		if got, ok := findings(t, dir, "lint"); !ok || len(got) > 0 {
			t.Fatalf("buf lint of the repository's contracts failed (Loam rules %v)", got)
		}
		cases := map[string]string{
			"access": "LOAM_RPC_ACCESS", "permission": "LOAM_PERMISSION_FORMAT", "condition": "LOAM_CONDITION_COMPILES",
			"owner": "LOAM_SERVICE_OWNER", "service": "LOAM_SERVICE_OPTION_VALID", "declared": "LOAM_EVENT_DECLARED",
			"eventtype": "LOAM_EVENT_TYPE", "keyfield": "LOAM_EVENT_KEY_FIELD",
		}
		files := map[string]string{}
		for name := range cases {
			files[name] = addContract(t, dir, filepath.Join("lint", name, "bad/v1/bad.proto"), name)
		}
		good := []string{
			addContract(t, dir, "lint/good/orders/v1/orders.proto", "orders"),
			addContract(t, dir, "lint/good/billing/v1/billing.proto", "billing"),
		}
		got, ok := findings(t, dir, "lint")
		if ok {
			t.Fatal("buf lint passed contracts that break Loam's rules")
		}
		for name, rule := range cases {
			if !slices.Contains(got[files[name]], rule) {
				t.Errorf("buf lint of %s reported Loam rules %v, want %s among them", files[name], got[files[name]], rule)
			}
		}
		for _, path := range good {
			if len(got[path]) > 0 {
				t.Errorf("buf lint of %s reported Loam rules %v, want none", path, got[path])
			}
		}
	})
	t.Run("breaking", func(t *testing.T) {
		version := func(name string) (dir, path string) {
			dir = copyTree(t, buildFiles...)
			return dir, addContract(t, dir, filepath.Join("breaking", name, "shop/v1/shop.proto"), "shop")
		}
		before, _ := version("before")
		for _, tt := range []struct {
			version string
			want    []string
		}{
			{"after", []string{"LOAM_ACCESS_NOT_WEAKENED", "LOAM_EVENT_FIELD_NO_DELETE", "LOAM_EVENT_TYPE_SAME", "LOAM_PERMISSION_SAME"}},
			{"compatible", nil},
		} {
			dir, path := version(tt.version)
			// buf names the files of a directory input by their full path.
			got, ok := findings(t, dir, "breaking", dir, "--against", before)
			rules := got[filepath.Join(dir, path)]
			slices.Sort(rules)
			if !slices.Equal(rules, tt.want) || ok != (tt.want == nil) {
				t.Errorf("buf breaking of %s = Loam rules %v (ok %v), want %v", tt.version, rules, ok, tt.want)
			}
		}
	})
}
