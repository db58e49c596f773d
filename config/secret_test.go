package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loamhq/loam/config"
)

func TestSecretRedaction(t *testing.T) {
	const value = "hunter2-s3cr3t"
	type holder struct {
		Name     string
		Password config.Secret
		Tokens   []config.Secret
		ByName   map[string]config.Secret
		Ptr      *config.Secret
	}
	s := config.NewSecret(value)
	h := holder{Name: "db", Password: s, Tokens: []config.Secret{s}, ByName: map[string]config.Secret{"a": s}, Ptr: &s}

	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outputs["secret "+verb] = fmt.Sprintf(verb, s)
		outputs["struct "+verb] = fmt.Sprintf(verb, h)
		outputs["pointer "+verb] = fmt.Sprintf(verb, &h)
	}
	outputs["Sprint"] = fmt.Sprint(s, h)
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)
	text, err := s.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	outputs["text"] = string(text)
	for name, h2 := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h2(&buf)).Info("config", "password", s, "config", h, slog.Any("ptr", &h))
		outputs[name] = buf.String()
	}

	for name, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("%s printed the secret: %s", name, out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("%s = %s, want it to say [redacted]", name, out)
		}
	}
	if got := s.Reveal(); got != value {
		t.Errorf("Reveal() = %q, want %q", got, value)
	}
}

func TestSecretEqual(t *testing.T) {
	a, b, c := config.NewSecret("x"), config.NewSecret("x"), config.NewSecret("y")
	if !a.Equal(b) || a.Equal(c) || !(config.Secret{}).Equal(config.NewSecret("")) {
		t.Errorf("Equal does not compare values")
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("cmp.Diff of equal secrets = %s, want none", diff)
	}
	if !(config.Secret{}).IsZero() || a.IsZero() {
		t.Errorf("IsZero is wrong")
	}
}

func TestSecretSources(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "db-password")
	writeFile(t, secretFile, "from-file\n\n")
	tests := []struct {
		name  string
		files map[string]string
		env   map[string]string
		want  string
	}{
		{name: "inline in a file", files: map[string]string{"base.yaml": "db:\n  password: inline\n"}, want: "inline"},
		{name: "file reference trims one newline", files: map[string]string{"base.yaml": "db:\n  password: file:" + secretFile + "\n"}, want: "from-file\n"},
		{name: "environment variable", env: map[string]string{"LOAMTEST_DB__PASSWORD": "from-env"}, want: "from-env"},
		{name: "file reference from an environment variable", env: map[string]string{"LOAMTEST_DB__PASSWORD": "file:" + secretFile}, want: "from-file\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.files = map[string]string{"base.yaml": "service:\n  name: x\n" + tt.files["base.yaml"]}
			dir := writeDir(t, tt.files)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := config.Load[testConfig](context.Background(), config.WithDir(dir), config.WithEnvPrefix("LOAMTEST"))
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if got.DB.Password.Reveal() != tt.want {
				t.Errorf("Load().DB.Password.Reveal() = %q, want %q", got.DB.Password.Reveal(), tt.want)
			}
		})
	}
}

func TestSecretNeverInErrors(t *testing.T) {
	type cfg struct {
		Token config.Secret `koanf:"token" validate:"min=16"`
	}
	dir := writeDir(t, map[string]string{"base.yaml": "token: short-s3cr3t\n"})
	_, err := config.Load[cfg](context.Background(), config.WithDir(dir))
	if err == nil || strings.Contains(err.Error(), "short-s3cr3t") || !strings.Contains(err.Error(), "token: is shorter than the minimum of 16 characters") {
		t.Errorf("Load() error = %v, want a length error without the value", err)
	}
}

// TestSecretFilesUnread checks the option of tools that check a
// configuration where its secrets are not mounted: a "file:" reference is
// kept, not read, and a missing file is no error; other secrets are as
// always.
func TestSecretFilesUnread(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": "service:\n  name: x\ndb:\n  password: file:/nonexistent/loam/db\n"})
	if _, err := config.Load[testConfig](t.Context(), config.WithDir(dir)); err == nil {
		t.Fatal("Load() of a missing secret file = nil, want an error")
	}
	cfg, err := config.Load[testConfig](t.Context(), config.WithDir(dir), config.WithSecretFilesUnread())
	if err != nil {
		t.Fatalf("Load(WithSecretFilesUnread) = %v", err)
	}
	if got := cfg.DB.Password.Reveal(); got != "file:/nonexistent/loam/db" {
		t.Errorf("password = %q, want the reference kept", got)
	}
	t.Setenv("LOAMTEST_DB__PASSWORD", "hunter2")
	cfg, err = config.Load[testConfig](t.Context(), config.WithDir(dir), config.WithEnvPrefix("LOAMTEST"), config.WithSecretFilesUnread())
	if err != nil || cfg.DB.Password.Reveal() != "hunter2" {
		t.Errorf("Load(env secret, WithSecretFilesUnread) = %v, %v; want the value from the environment", cfg.DB.Password, err)
	}
}
