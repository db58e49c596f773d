package config_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loamhq/loam/config"
)

// recorder is a slog.Handler that keeps every record, for tests to read.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// replaceFile replaces path at once, by renaming a new file over it, so
// that no reload can see it half written.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// warning is a record as the tests compare it.
type warning struct {
	level             slog.Level
	msg               string
	environment, path string
}

// warnings returns what was logged so far, with the path attribute made
// relative to dir.
func (r *recorder) warnings(dir string) []warning {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []warning
	for _, rec := range r.records {
		w := warning{level: rec.Level, msg: rec.Message}
		rec.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "environment":
				w.environment = a.Value.String()
			case "path":
				w.path, _ = filepath.Rel(dir, a.Value.String())
			}
			return true
		})
		out = append(out, w)
	}
	return out
}

func TestLoadWarnings(t *testing.T) {
	const good = "service:\n  name: captures\n"
	tests := []struct {
		name    string
		files   map[string]string
		env     string // WithEnvironment; empty leaves the choice to LOAM_ENV
		loamEnv string
		want    []warning
	}{
		{
			name:  "named environment without a file while others have one",
			files: map[string]string{"base.yaml": good, "staging.yaml": good},
			env:   "production",
			want:  []warning{{slog.LevelWarn, "no configuration file for the environment", "production", "production.{yaml,yml,json,toml}"}},
		},
		{
			name:    "LOAM_ENV names an environment without a file",
			files:   map[string]string{"base.yaml": good, "staging.yaml": good},
			loamEnv: "prod",
			want:    []warning{{slog.LevelWarn, "no configuration file for the environment", "prod", "prod.{yaml,yml,json,toml}"}},
		},
		{
			name:  "environment file that sets no key",
			files: map[string]string{"base.yaml": good, "production.yaml": "# nothing here yet\n"},
			env:   "production",
			want:  []warning{{slog.LevelWarn, "the environment's configuration file sets no key", "production", "production.yaml"}},
		},
		{
			name:  "default environment without a file",
			files: map[string]string{"base.yaml": good, "staging.yaml": good},
		},
		{
			name:  "a directory with a base file only",
			files: map[string]string{"base.yaml": good},
			env:   "production",
		},
		{
			name:  "environment with its file",
			files: map[string]string{"base.yaml": good, "production.toml": "[service]\nport = 9000\n"},
			env:   "production",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LOAM_ENV", tt.loamEnv)
			dir := writeDir(t, tt.files)
			opts := []config.Option{config.WithDir(dir)}
			if tt.env != "" {
				opts = append(opts, config.WithEnvironment(tt.env))
			}
			for name, run := range map[string]func(context.Context, ...config.Option) error{
				"Load": func(ctx context.Context, o ...config.Option) error {
					_, err := config.Load[testConfig](ctx, o...)
					return err
				},
				"Explain": func(ctx context.Context, o ...config.Option) error {
					_, err := config.Explain[testConfig](ctx, o...)
					return err
				},
			} {
				rec := &recorder{}
				if err := run(t.Context(), append(opts, config.WithLogger(slog.New(rec)))...); err != nil {
					t.Fatalf("%s() = %v", name, err)
				}
				if got := rec.warnings(dir); !equalWarnings(got, tt.want) {
					t.Errorf("%s() logged %+v, want %+v", name, got, tt.want)
				}
			}
		})
	}
}

func equalWarnings(a, b []warning) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLoadDefaultLogger: without WithLogger, a warning goes to
// slog.Default, so a service that never asked still hears of it; a nil
// logger discards it.
func TestLoadDefaultLogger(t *testing.T) {
	tests := []struct {
		name string
		opts []config.Option
		want int // warnings on slog.Default
	}{
		{name: "no logger given", want: 1},
		{name: "nil logger", opts: []config.Option{config.WithLogger(nil)}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			old := slog.Default()
			slog.SetDefault(slog.New(rec))
			t.Cleanup(func() { slog.SetDefault(old) })

			dir := writeDir(t, map[string]string{"base.yaml": "service:\n  name: captures\n", "staging.yaml": ""})
			opts := append([]config.Option{config.WithDir(dir), config.WithEnvironment("production")}, tt.opts...)
			if _, err := config.Load[testConfig](t.Context(), opts...); err != nil {
				t.Fatal(err)
			}
			if got := rec.warnings(dir); len(got) != tt.want {
				t.Errorf("Load() logged %+v to slog.Default, want %d warnings", got, tt.want)
			}
		})
	}
}

// watchProduction watches the production environment of dir until the
// test ends, sending every update and recording every warning.
func watchProduction(t *testing.T, dir string) (*config.Watcher[testConfig], <-chan update, *recorder) {
	t.Helper()
	rec := &recorder{}
	updates := make(chan update, 10)
	w, err := config.Watch(t.Context(), func(c testConfig, err error) {
		updates <- update{c.Service.Port, err}
	}, config.WithDir(dir), config.WithEnvironment("production"),
		config.WithDebounce(20*time.Millisecond), config.WithLogger(slog.New(rec)))
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w, updates, rec
}

// TestWatchKeepsValueWhenFileVanishes: a file the running configuration was
// loaded from that is deleted or emptied is a rejected change that names
// the file; the last good value stays until the file is back.
func TestWatchKeepsValueWhenFileVanishes(t *testing.T) {
	for _, tt := range []struct {
		name, file, msg string
		vanish          func(t *testing.T, path string)
		restored        int    // the port once the file is back with port 4000
		base            string // base.yaml, when not the usual one
		wantFields      int    // problems in the error, when more than one
	}{
		{name: "environment file deleted", file: "production.yaml", msg: "was deleted", vanish: remove, restored: 4000},
		{name: "environment file emptied", file: "production.yaml", msg: "was emptied", restored: 4000,
			vanish: func(t *testing.T, p string) { replaceFile(t, p, "# emptied\n") }},
		{name: "base file deleted", file: "base.yaml", msg: "was deleted", vanish: remove, restored: 2000},
		{name: "environment file deleted, leaving an invalid configuration", file: "production.yaml", msg: "was deleted",
			vanish: remove, restored: 4000, base: "service:\n  port: 1000\n", wantFields: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := "service:\n  name: captures\n  port: 1000\n"
			if tt.base != "" {
				base = tt.base
			}
			dir := writeDir(t, map[string]string{
				"base.yaml":       base,
				"production.yaml": "service:\n  name: captures\n  port: 2000\n",
				"staging.yaml":    "service:\n  port: 3000\n",
			})
			w, updates, rec := watchProduction(t, dir)

			path := filepath.Join(dir, tt.file)
			tt.vanish(t, path)
			u := next(t, updates)
			var cerr *config.Error
			if !errors.As(u.err, &cerr) || u.port != 2000 {
				t.Fatalf("update after the change = %+v, want port 2000 kept and a *config.Error", u)
			}
			if f := cerr.Fields[0]; f.Path != "" || f.Source.Name != path || !strings.Contains(f.Msg, tt.msg) {
				t.Errorf("Error.Fields[0] = %#v, want a file-level problem with the source %s and a message containing %q", f, path, tt.msg)
			}
			if want := max(tt.wantFields, 1); len(cerr.Fields) != want {
				t.Errorf("Error = %v, want %d problems", cerr, want)
			}
			if got := w.Current().Service.Port; got != 2000 {
				t.Errorf("Current().Service.Port = %d, want the last good 2000", got)
			}
			if got := rec.warnings(dir); len(got) != 0 {
				t.Errorf("Watch logged %+v besides rejecting the change, want nothing", got)
			}

			// The file back is a good change, delivered even when the value
			// is the last good one, since it follows a rejected one.
			replaceFile(t, path, "service:\n  name: captures\n  port: 4000\n")
			wantPort(t, updates, tt.restored)
		})
	}
}

// TestWatchWarnsOnReload: a configuration applied without its environment's
// file is reported on every reload that applies one, as at start-up.
func TestWatchWarnsOnReload(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": portFile("1000"), "staging.yaml": ""})
	_, updates, rec := watchProduction(t, dir)
	if got := rec.warnings(dir); len(got) != 1 {
		t.Fatalf("Watch() logged %+v at start, want one warning", got)
	}
	replaceFile(t, filepath.Join(dir, "base.yaml"), portFile("2000"))
	wantPort(t, updates, 2000)
	if got := rec.warnings(dir); len(got) != 2 || got[1].path != "production.{yaml,yml,json,toml}" {
		t.Errorf("after a reload Watch logged %+v, want a second warning naming production.{yaml,yml,json,toml}", got)
	}
}
