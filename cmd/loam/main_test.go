package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no args prints usage", args: nil, wantCode: 2, wantStderr: "Usage:"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "Usage:"},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: "loam "},
		{name: "unknown command is named", args: []string{"deploy"}, wantCode: 2, wantStderr: `unknown command "deploy"`},
		{name: "config: no subcommand", args: []string{"config"}, wantCode: 2, wantStderr: "Usage:"},
		{name: "proto: no subcommand", args: []string{"proto"}, wantCode: 2, wantStderr: "loam proto export"},
		{name: "proto: help", args: []string{"proto", "help"}, wantCode: 0, wantStderr: "loam proto export"},
		{name: "proto export: needs a directory", args: []string{"proto", "export"}, wantCode: 2, wantStderr: "Usage:"},
		{name: "proto export --check of a directory without the files", args: []string{"proto", "export", "--check", "testdata/config"}, wantCode: 1, wantStderr: "differ from Loam"},
		{name: "dev: no subcommand", args: []string{"dev"}, wantCode: 2, wantStderr: "loam dev issuer"},
		{name: "dev issuer: bad client", args: []string{"dev", "issuer", "--client", "worker"}, wantCode: 2, wantStderr: `--client "worker" is not ID:SECRET`},
		{name: "dev issuer: not loopback", args: []string{"dev", "issuer", "--addr", "0.0.0.0:9400"}, wantCode: 1, wantStderr: "not a loopback address"},
		{name: "config: help", args: []string{"config", "help"}, wantCode: 0, wantStdout: "application section"},
		{name: "config: unknown subcommand", args: []string{"config", "lint"}, wantCode: 2, wantStderr: `unknown command "lint"`},
		{name: "config: unknown flag", args: []string{"config", "explain", "--nope"}, wantCode: 2, wantStderr: "flag provided but not defined"},
		{name: "config: diff needs two environments", args: []string{"config", "diff", "--env", "staging", "testdata/config"}, wantCode: 2, wantStderr: "exactly two --env"},
		{name: "config: explain takes one environment", args: []string{"config", "explain", "--env", "a", "--env", "b"}, wantCode: 2, wantStderr: "one --env"},
		{name: "config: two directories", args: []string{"config", "validate", "a", "b"}, wantCode: 2, wantStderr: "at most one directory"},
		{name: "config: missing directory", args: []string{"config", "validate", "testdata/nope"}, wantCode: 1, wantStderr: "no such file or directory"},
		{name: "config: drift fails with --fail-on-drift", args: []string{"config", "diff", "--env", "staging", "--env", "production", "--fail-on-drift", "testdata/config"}, wantCode: 1, wantStdout: "changed"},
		{name: "config: no drift", args: []string{"config", "diff", "--env", "prod-eu", "--env", "prod-us", "--fail-on-drift", "testdata/regions"}, wantCode: 0, wantStdout: "no drift between prod-eu and prod-us"},
		{name: "config: environments without files differ in their derived names", args: []string{"config", "diff", "--env", "qa", "--env", "uat", "testdata/config"}, wantCode: 0,
			wantStdout: "service.environment  changed  qa  default  uat  default\n"},
		{name: "config: explain warns of an environment without a file", args: []string{"config", "explain", "--env", "qa", "testdata/config"}, wantCode: 0,
			wantStderr: "qa: warning: testdata/config/qa.{yaml,yml,json,toml}: no configuration file for the environment\n"},
		{name: "config: validate warns of an environment without a file", args: []string{"config", "validate", "--env", "qa", "testdata/config"}, wantCode: 0,
			wantStdout: "qa: warning: testdata/config/qa.{yaml,yml,json,toml}: no configuration file for the environment\nok: qa\n"},
		{name: "config: explain applies the production rules", args: []string{"config", "explain", "--env", "production", "testdata/prodrules"}, wantCode: 1,
			wantStdout: "service.reflection", wantStderr: "production: authn: production requires authentication: set authn.issuers or authn.mtls\n"},
		{name: "config: diff applies the production rules", args: []string{"config", "diff", "--env", "staging", "--env", "production", "testdata/prodrules"}, wantCode: 1,
			wantStderr: "staging: warning: service.environment: is \"production\" in the files of environment staging"},
		{name: "config: explain of an invalid environment", args: []string{"config", "explain", "--env", "staging", "testdata/invalid"}, wantCode: 1, wantStderr: "staging: testdata/invalid/base.yaml:3: YAML:"},
		{name: "config: diff of an invalid environment", args: []string{"config", "diff", "--env", "staging", "--env", "production", "testdata/invalid"}, wantCode: 1, wantStderr: "staging: testdata/invalid/staging.json:4: JSON:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d", tt.args, code, tt.wantCode)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("run(%q) stdout = %q, want it to contain %q", tt.args, stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr.String(), tt.wantStderr)
			}
		})
	}
}
