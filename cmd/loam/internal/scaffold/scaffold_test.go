package scaffold_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loamhq/loam/cmd/loam/internal/scaffold"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		p    scaffold.Params
		want string // a part of the error; empty for none
	}{
		{name: "released", p: scaffold.Params{Name: "orders", LoamVersion: "v0.3.0"}},
		{name: "underscores", p: scaffold.Params{Name: "order_history", LoamDir: "/src/loam"}},
		{name: "upper case", p: scaffold.Params{Name: "Orders", LoamVersion: "v0.3.0"}, want: `service name "Orders"`},
		{name: "dash", p: scaffold.Params{Name: "order-history", LoamVersion: "v0.3.0"}, want: "lower-case identifier"},
		{name: "double underscore", p: scaffold.Params{Name: "order__history", LoamVersion: "v0.3.0"}, want: "single underscores"},
		{name: "digit first", p: scaffold.Params{Name: "9orders", LoamVersion: "v0.3.0"}, want: "starting with a letter"},
		{name: "empty", p: scaffold.Params{LoamVersion: "v0.3.0"}, want: `service name ""`},
		{name: "bad module", p: scaffold.Params{Name: "orders", Module: "example.com/my orders", LoamVersion: "v0.3.0"}, want: `module path "example.com/my orders"`},
		{name: "relative loam dir", p: scaffold.Params{Name: "orders", LoamDir: "../loam"}, want: "want an absolute path"},
		{name: "no version", p: scaffold.Params{Name: "orders", LoamVersion: "(devel)"}, want: `Loam version "(devel)"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestToolsPinned: the service's tools module takes its versions from the
// copy of Loam's tools/go.mod embedded in the command, which must be
// Loam's own: a service gets the buf, plugins and pins Loam is checked with.
func TestToolsPinned(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "tools", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("loamtools.mod.txt")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("cmd/loam/internal/scaffold/loamtools.mod.txt differs from tools/go.mod; copy tools/go.mod over it")
	}
	goVersion, require, err := scaffold.ToolsRequirements()
	if err != nil {
		t.Fatal(err)
	}
	if goVersion == "" || !strings.Contains(strings.Join(require, "\n"), "pluginrpc.com/pluginrpc v0.6.0") {
		t.Errorf("ToolsRequirements() = %q, %d lines; want a go version and pluginrpc pinned at v0.6.0", goVersion, len(require))
	}
}

// TestWrite writes a service and checks what a reader of it relies on:
// the files, their names with the service's, the scripts executable, the
// replace directives of a work tree, and that nothing is left to render.
func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "svc")
	files, err := scaffold.Write(dir, scaffold.Params{Name: "order_history", Module: "acme.io/platform/history", LoamDir: "/src/loam"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"proto/order_history/v1/order_history.proto", "main.go", "internal/server/server_test.go",
		"config/development.yaml", "config/production.yaml", "tools/go.mod", "scripts/ci", "buf.yaml", "README.md"} {
		if !strings.Contains(strings.Join(files, " "), want) {
			t.Errorf("Write did not write %s; wrote %v", want, files)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "{{") || strings.Contains(string(b), "<no value>") {
			t.Errorf("%s holds an unrendered template", f)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "scripts", "ci")); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("scripts/ci is not executable: %v %v", st, err)
	}
	mod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
	if !strings.Contains(string(mod), "module acme.io/platform/history") || !strings.Contains(string(mod), "replace github.com/loamhq/loam => /src/loam") {
		t.Errorf("go.mod = %s; want the module path and a replace of Loam by the work tree", mod)
	}
	proto, _ := os.ReadFile(filepath.Join(dir, "proto", "order_history", "v1", "order_history.proto"))
	if !strings.Contains(string(proto), "package order_history.v1;") {
		t.Errorf("the contract does not declare package order_history.v1:\n%s", proto)
	}
}

func TestWriteRefusesNonEmptyDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := scaffold.Write(dir, scaffold.Params{Name: "orders", LoamVersion: "v0.3.0"})
	if !errors.Is(err, scaffold.ErrNotEmpty) || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("Write into a directory holding notes.txt = %v, want ErrNotEmpty naming notes.txt", err)
	}
	if len(files) != 0 {
		t.Errorf("Write wrote %v into a non-empty directory", files)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries after a refused Write, want 1", len(entries))
	}
}
