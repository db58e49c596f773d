package config_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loamhq/loam/config"
)

// exampleDir writes a small config directory and returns its path.
func exampleDir(files map[string]string) string {
	dir, err := os.MkdirTemp("", "loam-config-example")
	if err != nil {
		panic(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			panic(err)
		}
	}
	return dir
}

type ServiceConfig struct {
	Service struct {
		Name    string        `koanf:"name" validate:"required"`
		Port    int           `koanf:"port" default:"8080" validate:"min=1,max=65535"`
		Timeout time.Duration `koanf:"timeout" default:"5s"`
	} `koanf:"service"`
	DB struct {
		Password config.Secret `koanf:"password"`
	} `koanf:"db"`
}

func ExampleLoad() {
	dir := exampleDir(map[string]string{
		"base.yaml":       "service:\n  name: captures\ndb:\n  password: hunter2\n",
		"production.yaml": "service:\n  port: 9090\n",
	})
	defer os.RemoveAll(dir)

	cfg, err := config.Load[ServiceConfig](context.Background(),
		config.WithDir(dir), config.WithEnvironment("production"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Service.Name, cfg.Service.Port, cfg.Service.Timeout)
	fmt.Printf("%v %q\n", cfg.DB.Password, cfg.DB.Password.Reveal())
	// Output:
	// captures 9090 5s
	// [redacted] "hunter2"
}

func ExampleLoad_errors() {
	dir := exampleDir(map[string]string{
		"base.yaml":       "service:\n  nme: captures\n",
		"production.yaml": "service:\n  port: 70000\n  timeout: 30\n",
	})
	defer os.RemoveAll(dir)

	_, err := config.Load[ServiceConfig](context.Background(),
		config.WithDir(dir), config.WithEnvironment("production"))
	var cerr *config.Error
	if errors.As(err, &cerr) {
		for _, f := range cerr.Fields {
			fmt.Printf("%s | %s | %s\n", f.Path, f.Source.Kind, f.Msg)
		}
	}
	// Output:
	// service.name | unset | is required but not set
	// service.nme | file | is not a known key (did you mean service.name?)
	// service.port | file | 70000 is above the maximum 65535
	// service.timeout | file | 30 is not a duration: give it a unit, like 30s
}

func ExampleExplain() {
	dir := exampleDir(map[string]string{
		"base.yaml": "service:\n  name: captures\ndb:\n  password: hunter2\n",
	})
	defer os.RemoveAll(dir)
	os.Setenv("EXAMPLE_SERVICE__PORT", "9191")
	defer os.Unsetenv("EXAMPLE_SERVICE__PORT")

	entries, err := config.Explain[ServiceConfig](context.Background(),
		config.WithDir(dir), config.WithEnvPrefix("EXAMPLE"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range entries {
		src := e.Source.String()
		if e.Source.Kind == config.SourceFile {
			src = fmt.Sprintf("file %s:%d", filepath.Base(e.Source.Name), e.Source.Line)
		}
		fmt.Printf("%s = %s (%s)\n", e.Key, e.Value, src)
	}
	// Output:
	// db.password = [redacted] (file base.yaml:4)
	// service.name = captures (file base.yaml:2)
	// service.port = 9191 (env EXAMPLE_SERVICE__PORT)
	// service.timeout = 5s (default)
}

func ExampleWithLogger() {
	dir := exampleDir(map[string]string{
		"base.yaml":    "service:\n  name: captures\n",
		"staging.yaml": "service:\n  port: 9090\n",
	})
	defer os.RemoveAll(dir)
	// Print warnings without the time, and the path without the temporary
	// directory, so the output is stable.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{}
			case "path":
				a.Value = slog.StringValue(filepath.Base(a.Value.String()))
			}
			return a
		},
	}))

	// "prod" has no file, while staging has one: a misspelt environment.
	cfg, err := config.Load[ServiceConfig](context.Background(),
		config.WithDir(dir), config.WithEnvironment("prod"), config.WithLogger(log))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Service.Name, cfg.Service.Port)
	// Output:
	// level=WARN msg="no configuration file for the environment" environment=prod path=prod.{yaml,yml,json,toml}
	// captures 8080
}

func ExampleWatch() {
	dir := exampleDir(map[string]string{
		"base.yaml":       "service:\n  name: captures\n",
		"production.yaml": "service:\n  port: 9090\n",
	})
	defer os.RemoveAll(dir)

	type change struct {
		port int
		err  error
	}
	changes := make(chan change, 1)
	w, err := config.Watch(context.Background(), func(cfg ServiceConfig, err error) {
		changes <- change{cfg.Service.Port, err}
	}, config.WithDir(dir), config.WithEnvironment("production"), config.WithDebounce(20*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	fmt.Println("serving on", w.Current().Service.Port)

	// A good change is applied. Writing a temporary file and renaming it
	// over the old one replaces it at once, as Kubernetes does.
	tmp := filepath.Join(dir, ".production.yaml.tmp")
	_ = os.WriteFile(tmp, []byte("service:\n  port: 9191\n"), 0o600)
	_ = os.Rename(tmp, filepath.Join(dir, "production.yaml"))
	c := <-changes
	fmt.Println("now on", c.port, c.err)

	// A deleted environment file is refused: the service keeps its values
	// rather than fall back to the base file's.
	_ = os.Remove(filepath.Join(dir, "production.yaml"))
	c = <-changes
	var cerr *config.Error
	if errors.As(c.err, &cerr) {
		f := cerr.Fields[0]
		fmt.Println("still on", c.port, "because", filepath.Base(f.Source.Name), strings.SplitN(f.Msg, ";", 2)[0])
	}
	// Output:
	// serving on 9090
	// now on 9191 <nil>
	// still on 9191 because production.yaml was deleted while watching
}

func ExampleSecret() {
	s := config.NewSecret("hunter2")
	fmt.Printf("%v %s %q %#v\n", s, s, s, s)
	fmt.Println(s.Reveal())
	// Output:
	// [redacted] [redacted] "[redacted]" config.Secret("[redacted]")
	// hunter2
}
