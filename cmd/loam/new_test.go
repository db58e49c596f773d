package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewServiceRefuses(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "main.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{name: "no kind", args: []string{"new"}, wantCode: 2, wantStderr: "loam new service"},
		{name: "help", args: []string{"new", "help"}, wantCode: 0, wantStderr: "loam new service"},
		{name: "unknown kind", args: []string{"new", "library", "x"}, wantCode: 2, wantStderr: `unknown kind "library"`},
		{name: "no name", args: []string{"new", "service"}, wantCode: 2, wantStderr: "want a NAME"},
		{name: "bad name", args: []string{"new", "service", "--loam", root, "Orders", filepath.Join(t.TempDir(), "o")}, wantCode: 2, wantStderr: `service name "Orders"`},
		{name: "non-empty directory", args: []string{"new", "service", "--loam", root, "orders", full}, wantCode: 1, wantStderr: "directory is not empty (it holds main.go)"},
		{name: "not a work tree", args: []string{"new", "service", "--loam", t.TempDir(), "orders"}, wantCode: 2, wantStderr: "is not a Loam work tree"},
		{name: "a test binary has no released version", args: []string{"new", "service", "orders", filepath.Join(t.TempDir(), "o")}, wantCode: 2, wantStderr: "pass --loam"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("run(%q) = %d, stderr %q; want %d with %q", tt.args, code, stderr.String(), tt.wantCode, tt.wantStderr)
			}
		})
	}
	if entries, _ := os.ReadDir(full); len(entries) != 1 {
		t.Errorf("a refused loam new left %d entries in the non-empty directory, want 1", len(entries))
	}
}

// TestNewServiceFromOutside is the adoption path end to end, in a module
// outside this repository: `loam new service --generate` writes a service
// that requires this work tree, generates its code with buf from its own
// tools module, and its own CI script passes: gofmt, vet, tidy, buf lint
// with STANDARD, COMMENTS and Loam's rules (through buf-plugin-loam),
// generated code fresh, Loam's options current, every environment's
// configuration valid, loam doctor at 100, and its test of allowed, denied
// and unauthenticated calls. It builds buf, so it runs with
// LOAM_TEST_TOOLS=1, as in CI.
func TestNewServiceFromOutside(t *testing.T) {
	if os.Getenv("LOAM_TEST_TOOLS") != "1" {
		t.Skip("builds buf in a new module; set LOAM_TEST_TOOLS=1 to run it")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "orders")
	start := time.Now()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"new", "service", "--loam", root, "--module", "acme.io/orders", "--generate", "orders", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("loam new service = %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	written := time.Since(start)
	cmd := exec.CommandContext(t.Context(), filepath.Join(dir, "scripts", "ci"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the new service's scripts/ci: %v\n%s", err, out)
	}
	for _, step := range []string{"==> buf lint (with Loam's rules)", "==> generated code is fresh", "==> ready for production", "==> tests"} {
		if !strings.Contains(string(out), step) {
			t.Errorf("scripts/ci did not run %q:\n%s", step, out)
		}
	}
	if !strings.Contains(string(out), "ok  \tacme.io/orders/internal/server") {
		t.Errorf("the new service's test did not pass:\n%s", out)
	}
	t.Logf("loam new service --generate took %v; its CI script, tests included, %v", written.Round(time.Second), (time.Since(start) - written).Round(time.Second))
}
