package config_test

import (
	"context"
	"errors"
	"flag"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loamhq/loam/config"
)

func TestLoadLayers(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"base.yaml":       "service:\n  name: captures\n  port: 9000\n  timeout: 2s\nlabels:\n  team: media\nhosts: [a, b]\n",
		"production.toml": "[service]\nport = 9100\nmode = \"degraded\"\n[labels]\ntier = \"1\"\n",
		"staging.json":    `{"service": {"port": 9200}}`,
	})
	t.Setenv("LOAMTEST_SERVICE__LISTEN_ADDR", "localhost:9300")
	t.Setenv("LOAMTEST_TELEMETRY__SAMPLING_RATIO", "0.25")
	t.Setenv("LOAMTEST_HOSTS", "c,d")
	t.Setenv("LOAM_ENV", "staging")

	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.String("env", "", "environment")
	fs.Int("service.retries", 0, "retries")
	fs.Bool("verbose", false, "not a config key")
	if err := fs.Parse([]string{"--env=production", "--service.retries=3", "--verbose"}); err != nil {
		t.Fatal(err)
	}

	got, err := config.Load[testConfig](context.Background(), config.WithDir(dir), config.WithEnvPrefix("LOAMTEST"), config.WithFlags(fs))
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	var want testConfig
	want.Service.Name = "captures"
	want.Service.ListenAddr = "localhost:9300"
	want.Service.AdminAddr = ":9090"
	want.Service.Port = 9100
	want.Service.Timeout = 2 * time.Second
	want.Service.Mode = "degraded"
	want.Service.Retries = 3
	want.Telemetry.SamplingRatio = 0.25
	want.Labels = map[string]string{"team": "media", "tier": "1"}
	want.Hosts = []string{"c", "d"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadEnvironmentChoice(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"base.yaml":        "service:\n  name: base\n",
		"development.yaml": "service:\n  name: development\n",
		"staging.yaml":     "service:\n  name: staging\n",
		"production.yaml":  "service:\n  name: production\n",
	})
	tests := []struct {
		name    string
		opt     []config.Option
		flags   []string
		loamEnv string
		want    string
	}{
		{name: "default is development", want: "development"},
		{name: "LOAM_ENV", loamEnv: "staging", want: "staging"},
		{name: "flag beats LOAM_ENV", loamEnv: "staging", flags: []string{"--env=production"}, want: "production"},
		{name: "option beats flag", opt: []config.Option{config.WithEnvironment("staging")}, flags: []string{"--env=production"}, want: "staging"},
		{name: "environment without a file uses base", opt: []config.Option{config.WithEnvironment("qa")}, want: "base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LOAM_ENV", tt.loamEnv)
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.String("env", "", "environment")
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			// Environments without a file are warned of; TestLoadWarnings checks it.
			quiet := config.WithLogger(slog.New(slog.DiscardHandler))
			opts := append([]config.Option{config.WithDir(dir), config.WithFlags(fs), quiet}, tt.opt...)
			got, err := config.Load[testConfig](context.Background(), opts...)
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if got.Service.Name != tt.want {
				t.Errorf("Load().Service.Name = %q, want %q", got.Service.Name, tt.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	const good = "service:\n  name: captures\n"
	file := func(name string, line int) config.Source {
		return config.Source{Kind: config.SourceFile, Name: name, Line: line}
	}
	env := func(name string) config.Source { return config.Source{Kind: config.SourceEnv, Name: name} }
	tests := []struct {
		name  string
		files map[string]string
		env   map[string]string
		flags []string
		want  []config.FieldError // Source.Name of files is relative to the directory; Msg is a substring
	}{
		{
			name:  "unknown key in a file, with a suggestion",
			files: map[string]string{"base.yaml": good + "  prot: 1\n"},
			want:  []config.FieldError{{Path: "service.prot", Source: file("base.yaml", 3), Msg: "is not a known key (did you mean service.port?)"}},
		},
		{
			name:  "unknown section",
			files: map[string]string{"base.yaml": good + "cache:\n  size: 3\n"},
			want:  []config.FieldError{{Path: "cache", Source: file("base.yaml", 3), Msg: "is not a known key"}},
		},
		{
			name:  "unknown key in an environment variable",
			files: map[string]string{"base.yaml": good},
			env:   map[string]string{"LOAMTEST_SERVICE__PROT": "1"},
			want:  []config.FieldError{{Path: "service.prot", Source: env("LOAMTEST_SERVICE__PROT"), Msg: "is not a known key"}},
		},
		{
			name:  "unknown key in a flag",
			files: map[string]string{"base.yaml": good},
			flags: []string{"--service.prot=1"},
			want:  []config.FieldError{{Path: "service.prot", Source: config.Source{Kind: config.SourceFlag, Name: "--service.prot"}, Msg: "is not a known key"}},
		},
		{
			name:  "type error in a file",
			files: map[string]string{"base.yaml": good + "  port: eighty\n"},
			want:  []config.FieldError{{Path: "service.port", Source: file("base.yaml", 3), Msg: `"eighty" is not a whole number`}},
		},
		{
			name:  "type error in an environment variable",
			files: map[string]string{"base.yaml": good},
			env:   map[string]string{"LOAMTEST_SERVICE__TIMEOUT": "soon"},
			want:  []config.FieldError{{Path: "service.timeout", Source: env("LOAMTEST_SERVICE__TIMEOUT"), Msg: `"soon" is not a duration`}},
		},
		{
			name:  "integer out of range",
			files: map[string]string{"base.json": `{"service": {"name": "x", "retries": 300}}`},
			want:  []config.FieldError{{Path: "service.retries", Source: file("base.json", 0), Msg: "300 is out of range for uint8"}},
		},
		{
			name:  "fraction for an integer",
			files: map[string]string{"base.yaml": good + "  port: 80.5\n"},
			want:  []config.FieldError{{Path: "service.port", Source: file("base.yaml", 3), Msg: "80.5 is not a whole number"}},
		},
		{
			name:  "duration without a unit",
			files: map[string]string{"base.yaml": good + "  timeout: 30\n"},
			want:  []config.FieldError{{Path: "service.timeout", Source: file("base.yaml", 3), Msg: "30 is not a duration: give it a unit, like 30s"}},
		},
		{
			name:  "section where a value belongs",
			files: map[string]string{"base.yaml": good + "  port:\n    number: 80\n"},
			want:  []config.FieldError{{Path: "service.port", Source: file("base.yaml", 4), Msg: "takes a single value, not a section"}},
		},
		{
			name:  "value where a section belongs",
			files: map[string]string{"base.yaml": good + "telemetry: on\n"},
			want:  []config.FieldError{{Path: "telemetry", Source: file("base.yaml", 3), Msg: "is a section of keys, not the single value"}},
		},
		{
			name:  "required",
			files: map[string]string{"base.yaml": "service:\n  port: 80\n"},
			want:  []config.FieldError{{Path: "service.name", Msg: "is required but not set"}},
		},
		{
			name:  "required set to empty",
			files: map[string]string{"base.yaml": "service:\n  name: ''\n"},
			want:  []config.FieldError{{Path: "service.name", Source: file("base.yaml", 2), Msg: "is required but set to an empty value"}},
		},
		{
			name:  "max in the environment file",
			files: map[string]string{"base.yaml": good, "production.yaml": "service:\n  port: 70000\n"},
			want:  []config.FieldError{{Path: "service.port", Source: file("production.yaml", 2), Msg: "70000 is above the maximum 65535"}},
		},
		{
			name:  "min",
			files: map[string]string{"base.yaml": good + "  port: 0\n"},
			want:  []config.FieldError{{Path: "service.port", Source: file("base.yaml", 3), Msg: "0 is below the minimum 1"}},
		},
		{
			name:  "duration minimum",
			files: map[string]string{"base.yaml": good + "  timeout: 10ms\n"},
			want:  []config.FieldError{{Path: "service.timeout", Source: file("base.yaml", 3), Msg: "10ms is below the minimum 1s"}},
		},
		{
			name:  "lte on a float",
			files: map[string]string{"base.toml": "[service]\nname = \"x\"\n[telemetry]\nsampling_ratio = 1.5\n"},
			want:  []config.FieldError{{Path: "telemetry.sampling_ratio", Source: file("base.toml", 0), Msg: "1.5 is above the maximum 1"}},
		},
		{
			name:  "oneof",
			files: map[string]string{"base.yaml": good + "  mode: fast\n"},
			want:  []config.FieldError{{Path: "service.mode", Source: file("base.yaml", 3), Msg: `"fast" is not one of normal, degraded`}},
		},
		{
			name:  "url",
			files: map[string]string{"base.yaml": good + "telemetry:\n  endpoint: not a url\n"},
			want:  []config.FieldError{{Path: "telemetry.endpoint", Source: file("base.yaml", 4), Msg: `"not a url" is not a valid URL`}},
		},
		{
			name:  "hostname_port",
			files: map[string]string{"base.yaml": good},
			env:   map[string]string{"LOAMTEST_SERVICE__LISTEN_ADDR": "8080"},
			want:  []config.FieldError{{Path: "service.listen_addr", Source: env("LOAMTEST_SERVICE__LISTEN_ADDR"), Msg: `"8080" is not a host:port`}},
		},
		{
			name:  "listen_addr",
			files: map[string]string{"base.yaml": good},
			env:   map[string]string{"LOAMTEST_SERVICE__ADMIN_ADDR": "localhost:99999"},
			want: []config.FieldError{{Path: "service.admin_addr", Source: env("LOAMTEST_SERVICE__ADMIN_ADDR"),
				Msg: `"localhost:99999" is not an address to listen on, host:port (the host may be empty, port 0 picks a free port)`}},
		},
		{
			name:  "missing secret file",
			files: map[string]string{"base.yaml": good + "db:\n  password: file:/nonexistent/loam/db\n"},
			want:  []config.FieldError{{Path: "db.password", Source: file("base.yaml", 4), Msg: `secret file "/nonexistent/loam/db" cannot be read: no such file or directory`}},
		},
		{
			name:  "bad YAML syntax",
			files: map[string]string{"base.yaml": good + "   port: 80\n"},
			want:  []config.FieldError{{Source: file("base.yaml", 3), Msg: "YAML:"}},
		},
		{
			name:  "duplicate YAML key",
			files: map[string]string{"base.yaml": good + "  name: again\n"},
			want:  []config.FieldError{{Source: file("base.yaml", 3), Msg: `mapping key "name" already defined at line 2`}},
		},
		{
			name:  "bad JSON syntax",
			files: map[string]string{"base.json": "{\n  \"service\": {\n    \"name\": \"x\",\n  }\n}\n"},
			want:  []config.FieldError{{Source: file("base.json", 4), Msg: "JSON: invalid character '}'"}},
		},
		{
			name:  "bad TOML syntax",
			files: map[string]string{"base.toml": "[service]\nname = \"x\"\nport = \n"},
			want:  []config.FieldError{{Source: file("base.toml", 3), Msg: "TOML:"}},
		},
		{
			name:  "duplicate TOML key",
			files: map[string]string{"base.toml": "[service]\nname = \"x\"\nname = \"y\"\n"},
			want:  []config.FieldError{{Source: file("base.toml", 0), Msg: "TOML: key name is already defined"}},
		},
		{
			name:  "two files for one environment",
			files: map[string]string{"base.json": "{}", "base.yaml": good},
			want:  []config.FieldError{{Source: file("base.json", 0), Msg: "base.yaml is also there; keep one file per environment"}},
		},
		{
			name: "every problem at once",
			files: map[string]string{
				"base.yaml":       "service:\n  name: captures\n  prot: 1\n",
				"production.yaml": "service:\n  port: 70000\n  mode: fast\n",
			},
			env: map[string]string{"LOAMTEST_SERVICE__TIMEOUT": "soon"},
			want: []config.FieldError{
				{Path: "service.mode", Source: file("production.yaml", 3), Msg: "is not one of"},
				{Path: "service.port", Source: file("production.yaml", 2), Msg: "above the maximum"},
				{Path: "service.prot", Source: file("base.yaml", 3), Msg: "is not a known key"},
				{Path: "service.timeout", Source: env("LOAMTEST_SERVICE__TIMEOUT"), Msg: "is not a duration"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.String("service.prot", "", "a flag that names no key")
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			got, err := config.Load[testConfig](context.Background(), config.WithDir(dir),
				config.WithEnvironment("production"), config.WithEnvPrefix("LOAMTEST"), config.WithFlags(fs))
			var cerr *config.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Load() error = %v, want a *config.Error", err)
			}
			if diff := cmp.Diff(testConfig{}, got); diff != "" {
				t.Errorf("Load() returned a value with an error (-want +got):\n%s", diff)
			}
			if cerr.Environment != "production" {
				t.Errorf("Error.Environment = %q, want %q", cerr.Environment, "production")
			}
			if len(cerr.Fields) != len(tt.want) {
				t.Fatalf("Load() error has %d problems, want %d:\n%v", len(cerr.Fields), len(tt.want), err)
			}
			for i, w := range tt.want {
				if w.Source.Kind == config.SourceFile {
					w.Source.Name = filepath.Join(dir, w.Source.Name)
				}
				g := cerr.Fields[i]
				if g.Path != w.Path || g.Source != w.Source || !strings.Contains(g.Msg, w.Msg) {
					t.Errorf("Load() problem %d = %#v, want path %q, source %v, message containing %q", i, g, w.Path, w.Source, w.Msg)
				}
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	err := &config.Error{Environment: "production", Fields: []config.FieldError{
		{Source: config.Source{Kind: config.SourceFile, Name: "config/base.yaml", Line: 3}, Msg: "YAML: did not find expected key"},
		{Path: "service.name", Msg: "is required but not set"},
		{Path: "service.port", Source: config.Source{Kind: config.SourceFile, Name: "config/production.yaml", Line: 4}, Msg: "70000 is above the maximum 65535"},
		{Path: "service.timeout", Source: config.Source{Kind: config.SourceEnv, Name: "CAPTURES_SERVICE__TIMEOUT"}, Msg: `"soon" is not a duration`},
	}}
	want := `config: environment production: 4 problems:
	config/base.yaml:3: YAML: did not find expected key
	service.name: is required but not set
	service.port: 70000 is above the maximum 65535 (set by config/production.yaml:4)
	service.timeout: "soon" is not a duration (set by env CAPTURES_SERVICE__TIMEOUT)`
	if got := err.Error(); got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
}

func TestLoadMisuse(t *testing.T) {
	ctx := context.Background()
	if _, err := config.Load[testConfig](ctx, config.WithDir(filepath.Join(t.TempDir(), "missing"))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(WithDir(missing)) error = %v, want fs.ErrNotExist", err)
	}
	if _, err := config.Load[map[string]any](ctx, config.WithDir(t.TempDir())); err == nil {
		t.Errorf("Load[map[string]any]() error = nil, want an error")
	}
	if _, err := config.Load[testConfig](ctx, config.WithEnvironment("../etc")); err == nil {
		t.Errorf("Load(WithEnvironment(../etc)) error = nil, want an error")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := config.Load[testConfig](canceled); err != context.Canceled {
		t.Errorf("Load(canceled ctx) error = %v, want %v", err, context.Canceled)
	}
}

func TestEnvironments(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": "", "staging.yaml": "", "production.toml": "", "notes.txt": "", ".prod.yaml.swp": ""})
	got, err := config.Environments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"production", "staging"}, got); diff != "" {
		t.Errorf("Environments() mismatch (-want +got):\n%s", diff)
	}
}

// openConfig has a remain map: every top-level key that names no section
// lands in Other, except a misspelling of a section's name.
type openConfig struct {
	Service struct {
		Name string `koanf:"name"`
	} `koanf:"service"`
	Telemetry struct {
		LogLevel string `koanf:"log_level"`
	} `koanf:"telemetry"`
	Authn struct {
		MTLS bool `koanf:"mtls"`
	} `koanf:"authn"`
	Other map[string]any `koanf:",remain"`
}

func TestLoadRemain(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		wantOther []string // the keys of Other
		wantErr   string   // the one problem, when there is one
	}{
		{name: "other sections are taken", file: "storage:\n  bucket: b\ncache:\n  x: 1\n", wantOther: []string{"cache", "storage"}},
		{name: "a letter missing", file: "telemtry:\n  log_level: debug\n", wantErr: "telemtry: is not a known key (did you mean telemetry?)"},
		{name: "two letters swapped", file: "servcie:\n  name: x\n", wantErr: "servcie: is not a known key (did you mean service?)"},
		{name: "two typos in a long name", file: "telmetri:\n  log_level: debug\n", wantErr: "telmetri: is not a known key (did you mean telemetry?)"},
		{name: "one typo in a short name", file: "authm:\n  mtls: true\n", wantErr: "authm: is not a known key (did you mean authn?)"},
		{name: "two typos in a short name are another section", file: "atuh:\n  x: 1\nauxxn:\n  y: 2\n", wantOther: []string{"atuh", "auxxn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, map[string]string{"base.yaml": tt.file})
			got, err := config.Load[openConfig](t.Context(), config.WithDir(dir))
			if tt.wantErr != "" {
				var cerr *config.Error
				if !errors.As(err, &cerr) || len(cerr.Fields) != 1 || !strings.HasPrefix(cerr.Fields[0].Error(), tt.wantErr) {
					t.Fatalf("Load() = %v, want one problem %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			keys := slices.Sorted(maps.Keys(got.Other))
			if diff := cmp.Diff(tt.wantOther, keys); diff != "" {
				t.Errorf("Load().Other keys mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnvironmentDefault(t *testing.T) {
	type cfg struct {
		Service struct {
			Environment string `koanf:"environment" default:"${environment}"`
		} `koanf:"service"`
	}
	dir := t.TempDir()
	for _, env := range []string{"staging", "production"} {
		got, err := config.Load[cfg](t.Context(), config.WithDir(dir), config.WithEnvironment(env))
		if err != nil {
			t.Fatal(err)
		}
		if got.Service.Environment != env {
			t.Errorf("Load(environment %s) set service.environment = %q, want %q", env, got.Service.Environment, env)
		}
	}
}
