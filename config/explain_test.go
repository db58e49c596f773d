package config_test

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loamhq/loam/config"
)

func TestExplain(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"base.yaml":       "service:\n  name: captures\n  port: 9000\nlabels:\n  team: media\ndb:\n  password: hunter2\n",
		"production.json": `{"service": {"port": 9100}}`,
	})
	t.Setenv("LOAMTEST_SERVICE__MODE", "degraded")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.Int("service.retries", 0, "")
	if err := fs.Parse([]string{"--service.retries=2"}); err != nil {
		t.Fatal(err)
	}
	got, err := config.Explain[testConfig](context.Background(), config.WithDir(dir),
		config.WithEnvironment("production"), config.WithEnvPrefix("LOAMTEST"), config.WithFlags(fs))
	if err != nil {
		t.Fatalf("Explain() error = %v", err)
	}
	base := filepath.Join(dir, "base.yaml")
	def := config.Source{Kind: config.SourceDefault}
	want := []config.Entry{
		{Key: "db.password", Value: "[redacted]", Source: config.Source{Kind: config.SourceFile, Name: base, Line: 7}},
		{Key: "hosts"},
		{Key: "labels.team", Value: "media", Raw: "media", Source: config.Source{Kind: config.SourceFile, Name: base, Line: 5}},
		{Key: "service.admin_addr", Value: ":9090", Raw: ":9090", Source: def},
		{Key: "service.listen_addr", Value: ":8080", Raw: ":8080", Source: def},
		{Key: "service.mode", Value: "degraded", Raw: "degraded", Source: config.Source{Kind: config.SourceEnv, Name: "LOAMTEST_SERVICE__MODE"}},
		{Key: "service.name", Value: "captures", Raw: "captures", Source: config.Source{Kind: config.SourceFile, Name: base, Line: 2}},
		{Key: "service.port", Value: "9100", Raw: float64(9100), Source: config.Source{Kind: config.SourceFile, Name: filepath.Join(dir, "production.json")}},
		{Key: "service.retries", Value: "2", Raw: "2", Source: config.Source{Kind: config.SourceFlag, Name: "--service.retries"}},
		{Key: "service.timeout", Value: "5s", Raw: "5s", Source: def},
		{Key: "telemetry.endpoint"},
		{Key: "telemetry.sampling_ratio", Value: "1", Raw: "1", Source: def},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Explain() mismatch (-want +got):\n%s", diff)
	}
}

func TestExplainInvalid(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": "service:\n  nme: captures\n"})
	got, err := config.Explain[testConfig](context.Background(), config.WithDir(dir))
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Explain() error = %v, want a *config.Error", err)
	}
	if len(got) == 0 || got[0].Key != "db.password" {
		t.Errorf("Explain() = %v, want the entries along with the error", got)
	}
}

func TestSourceString(t *testing.T) {
	tests := []struct {
		src  config.Source
		want string
	}{
		{config.Source{}, "unset"},
		{config.Source{Kind: config.SourceDefault}, "default"},
		{config.Source{Kind: config.SourceFile, Name: "config/base.yaml", Line: 12}, "file config/base.yaml:12"},
		{config.Source{Kind: config.SourceFile, Name: "config/base.toml"}, "file config/base.toml"},
		{config.Source{Kind: config.SourceEnv, Name: "CAPTURES_SERVICE__PORT"}, "env CAPTURES_SERVICE__PORT"},
		{config.Source{Kind: config.SourceFlag, Name: "--service.port"}, "flag --service.port"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.src.String(); got != tt.want {
				t.Errorf("%#v.String() = %q, want %q", tt.src, got, tt.want)
			}
		})
	}
}

// TestExplainValues: lists and maps read as YAML, and a secret is hidden
// only when it holds something.
func TestExplainValues(t *testing.T) {
	type rule struct {
		Method string        `koanf:"method"`
		Token  config.Secret `koanf:"token"`
	}
	type cfg struct {
		Hosts   []string            `koanf:"hosts"`
		Roles   map[string][]string `koanf:"roles"`
		Issuers []map[string]any    `koanf:"issuers"`
		Rules   []rule              `koanf:"rules"`
		Empty   []string            `koanf:"empty"`
		Port    int                 `koanf:"port"`
		Secrets struct {
			Set   config.Secret `koanf:"set"`
			Blank config.Secret `koanf:"blank"`
			Unset config.Secret `koanf:"unset"`
			File  config.Secret `koanf:"file"`
		} `koanf:"secrets"`
	}
	mounted := filepath.Join(t.TempDir(), "token")
	writeFile(t, mounted, "hunter2\n")
	dir := writeDir(t, map[string]string{"base.yaml": `
hosts: [a, "1", "yes"]
roles:
  planter: [captures.create, captures.read]
issuers:
  - url: https://id.example.com
    audiences: [captures]
rules:
  - method: /a.B/C
    token: hunter2
empty: []
port: 8080
secrets:
  set: hunter2
  blank: ""
  file: file:` + mounted + `
`})
	got, err := config.Explain[cfg](t.Context(), config.WithDir(dir))
	if err != nil {
		t.Fatalf("Explain() = %v", err)
	}
	values := map[string]string{}
	for _, e := range got {
		values[e.Key] = e.Value
	}
	want := map[string]string{
		"hosts":         `[a, "1", "yes"]`,
		"roles.planter": "[captures.create, captures.read]",
		"issuers":       "[{audiences: [captures], url: 'https://id.example.com'}]",
		"rules":         "[redacted]",
		"empty":         "[]",
		"port":          "8080",
		"secrets.set":   "[redacted]",
		"secrets.blank": "",
		"secrets.unset": "",
		"secrets.file":  "[redacted]",
	}
	if diff := cmp.Diff(want, values); diff != "" {
		t.Errorf("Explain() values mismatch (-want +got):\n%s", diff)
	}
	raws := map[string]any{}
	for _, e := range got {
		raws[e.Key] = e.Raw
	}
	wantRaw := map[string]any{
		"hosts":         []any{"a", "1", "yes"},
		"roles.planter": []any{"captures.create", "captures.read"},
		"issuers":       []any{map[string]any{"url": "https://id.example.com", "audiences": []any{"captures"}}},
		"rules":         nil,
		"empty":         []any{},
		"port":          8080,
		"secrets.set":   nil,
		"secrets.blank": nil,
		"secrets.unset": nil,
		"secrets.file":  nil,
	}
	if diff := cmp.Diff(wantRaw, raws); diff != "" {
		t.Errorf("Explain() raw values mismatch (-want +got):\n%s", diff)
	}
	// Only a secret read from a file names the file.
	files := map[string]string{}
	for _, e := range got {
		if e.SecretFile != "" {
			files[e.Key] = e.SecretFile
		}
	}
	if diff := cmp.Diff(map[string]string{"secrets.file": mounted}, files); diff != "" {
		t.Errorf("Explain() secret files mismatch (-want +got):\n%s", diff)
	}
}
