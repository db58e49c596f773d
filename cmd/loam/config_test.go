package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// TestConfigGolden runs "loam config" on testdata/config, a directory with
// three environments, and compares the output with testdata/golden.
func TestConfigGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{name: "explain_production", args: []string{"explain", "--env", "production", "testdata/config"}},
		{name: "explain_staging_json", args: []string{"explain", "--env=staging", "--json", "testdata/config"}},
		{name: "diff_staging_production", args: []string{"diff", "--env", "staging", "--env", "production", "testdata/config"}},
		{name: "diff_development_staging_json", args: []string{"diff", "testdata/config", "--env", "development", "--env", "staging", "--json"}},
		{name: "validate", args: []string{"validate", "testdata/config"}},
		{name: "validate_json", args: []string{"validate", "--json", "testdata/config"}},
		{name: "validate_invalid", args: []string{"validate", "testdata/invalid"}, wantCode: 1},
		{name: "validate_bad_sections", args: []string{"validate", "--env", "production", "testdata/badsections"}, wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"config"}, tt.args...)
			if code := run(args, &stdout, &stderr); code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", args, code, tt.wantCode, stderr.String())
			}
			golden := filepath.Join("testdata", "golden", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, stdout.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), stdout.String()); diff != "" {
				t.Errorf("run(%q) stdout mismatch (-want +got):\n%s", args, diff)
			}
		})
	}
}

func TestIsSecretKey(t *testing.T) {
	tests := map[string]bool{
		"db.password": true, "api_key": true, "authn.client_secret": true, "github.token": true,
		"db.url": false, "password_policy.min_length": false, "service.port": false,
	}
	for key, want := range tests {
		if got := isSecretKey(key); got != want {
			t.Errorf("isSecretKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// TestEventsSection checks that "loam config" knows the events section:
// validate checks it strictly and does not list it as an application's.
func TestEventsSection(t *testing.T) {
	if !slices.Contains(knownSections(), "events") {
		t.Fatalf("knownSections() = %v, want events among them", knownSections())
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("service:\n  name: x\nevents:\n  driver: nats\n  nats:\n    url: nats://nats:4222\n    publish_window: -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"config", "validate", dir}, &stdout, &stderr); code != 1 {
		t.Errorf("validate = %d, want 1; stdout:\n%s", code, stdout.String())
	}
	if !strings.Contains(stdout.String(), "events.nats.publish_window: -1 is below the minimum 0") || strings.Contains(stdout.String(), "not checked") {
		t.Errorf("validate output:\n%s\nwant the events problem, and no unchecked section", stdout.String())
	}
}
