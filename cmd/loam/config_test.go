package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/service"
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
		{name: "validate_production_rules", args: []string{"validate", "testdata/prodrules"}, wantCode: 1},
		{name: "validate_production_rules_json", args: []string{"validate", "--json", "testdata/prodrules"}, wantCode: 1},
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

// TestDerive: the settings the server derives show the value it derives,
// marked so, and the rest are left as the layers set them.
func TestDerive(t *testing.T) {
	file := config.Source{Kind: config.SourceFile, Name: "config/production.yaml", Line: 3}
	on := true
	tests := []struct {
		name   string
		env    string
		cfg    func(*service.Config)
		key    string
		source config.Source
		want   string // Value
		wantBy string // source()
	}{
		{name: "reflection unset outside production", env: "staging", key: "service.reflection", want: "true", wantBy: "derived"},
		{name: "reflection unset in production", env: "production", key: "service.reflection", want: "false", wantBy: "derived"},
		{name: "reflection set", env: "production", cfg: func(c *service.Config) { c.Service.Reflection = &on },
			key: "service.reflection", source: file, want: "true", wantBy: "file config/production.yaml:3"},
		{name: "environment unset is the one explained", env: "qa", key: "service.environment", want: "qa", wantBy: "derived"},
		{name: "environment set", env: "qa", cfg: func(c *service.Config) { c.Service.Environment = "staging" },
			key: "service.environment", source: file, want: "staging", wantBy: "file config/production.yaml:3"},
		{name: "a zero that means a default", env: "qa", cfg: func(c *service.Config) { c.Service.ShutdownTimeout = 0 },
			key: "service.shutdown_timeout", source: file, want: "15s", wantBy: "derived from file config/production.yaml:3"},
		{name: "a value kept", env: "qa", cfg: func(c *service.Config) { c.Service.ShutdownTimeout = time.Minute },
			key: "service.shutdown_timeout", source: file, want: "1m0s", wantBy: "file config/production.yaml:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := service.Config{Service: service.Settings{ShutdownTimeout: 15 * time.Second}}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			v, _ := fieldByKey(reflect.ValueOf(cfg), tt.key)
			es := []entry{{Entry: config.Entry{Key: tt.key, Value: text(v), Source: tt.source}}}
			derive(es, cfg, tt.env)
			if got := es[0]; got.Value != tt.want || got.source() != tt.wantBy {
				t.Errorf("derive(%s) = %q from %q, want %q from %q", tt.key, got.Value, got.source(), tt.want, tt.wantBy)
			}
		})
	}
}

func TestFieldByKey(t *testing.T) {
	var cfg loamSections
	cfg.Service.Name = "captures"
	cfg.Authz.Roles = map[string][]string{"planter": {"captures.create"}}
	tests := []struct {
		key  string
		want any // nil: not found
	}{
		{"service.name", "captures"},
		{"authz.roles.planter", []string{"captures.create"}},
		{"authz.roles.gardener", nil},
		{"service.nope", nil},
		{"service.name.deeper", nil},
		{"captures.timeout", nil}, // an application section
		{"application", nil},      // the field that holds them has no key
	}
	for _, tt := range tests {
		v, ok := fieldByKey(reflect.ValueOf(cfg), tt.key)
		var got any
		if ok {
			got = v.Interface()
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("fieldByKey(%q) mismatch (-want +got):\n%s", tt.key, diff)
		}
	}
}

func TestErrorLines(t *testing.T) {
	a, b, c := errors.New("service.name: is required"), errors.New("rules./x: bad"), errors.New("roles.y: bad\nand more")
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{name: "nil", err: nil, want: nil},
		{name: "one", err: a, want: []string{"service.name: is required"}},
		{name: "joined", err: errors.Join(a, b), want: []string{"service.name: is required", "rules./x: bad"}},
		{name: "a prefix on a joined error applies to each", err: errors.Join(a, fmt.Errorf("authz: %w", errors.Join(b, c))),
			want: []string{"service.name: is required", "authz: rules./x: bad", "authz: roles.y: bad", "authz: and more"}},
		{name: "a wrapped single error", err: fmt.Errorf("authn: %w", a), want: []string{"authn: service.name: is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, errorLines(tt.err, "")); diff != "" {
				t.Errorf("errorLines(%v) mismatch (-want +got):\n%s", tt.err, diff)
			}
		})
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

// TestValidateWithoutMountedSecrets checks a production configuration
// away from its pod: a secret read from a mounted file that is not here is
// no problem, since the file exists only where the service runs.
func TestValidateWithoutMountedSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("service:\n  name: x\ncache:\n  redis:\n    addresses: [redis:6379]\n    password: file:/nonexistent/loam/redis\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"config", "validate", dir}, &stdout, &stderr); code != 0 {
		t.Errorf("validate = %d, want 0; stdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
}
