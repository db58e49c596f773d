package service_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/service"
)

// appConfig is how a service declares its configuration: Loam's sections
// embedded, its own beside them.
type appConfig struct {
	service.Config
	Storage struct {
		Bucket string `koanf:"bucket" validate:"required"`
	} `koanf:"storage"`
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestConfigLoadsFromFiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"base.yaml": `
service:
  name: captures
  listen_addr: 127.0.0.1:0
  admin_addr: ""
telemetry:
  sampling_ratio: 0.25
storage:
  bucket: captures-dev
`,
		"production.yaml": `
service:
  environment: production
  shutdown_timeout: 30s
authn:
  issuers:
    - url: https://id.example.com/realms/trees
      audiences: [captures]
`,
	})
	cfg, err := config.Load[appConfig](t.Context(), config.WithDir(dir), config.WithEnvironment("production"))
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	s := cfg.Service
	if s.Name != "captures" || s.Environment != "production" || s.ShutdownTimeout != 30*time.Second ||
		s.Limits.MaxRecvMsgBytes != 4<<20 || s.Client.RetryMaxAttempts != 3 || *cfg.Telemetry.SamplingRatio != 0.25 || cfg.Storage.Bucket != "captures-dev" {
		t.Errorf("Load() = %+v, want files and defaults merged", cfg)
	}
	srv, err := service.New(t.Context(), cfg.Config, service.WithoutSignals(), service.WithTelemetry(quietTelemetry(t)))
	if err != nil {
		t.Fatalf("New(loaded config) = %v", err)
	}
	srv.Shutdown(t.Context())
}

func TestConfigLoadRejectsBadSections(t *testing.T) {
	dir := writeFiles(t, map[string]string{"base.yaml": `
service:
  name: captures
  faults:
    enabled: true
    rules:
      - method: /captures.v1.CaptureService/*
        delay: 100ms
        percnt: 50
telemetry:
  traces:
    exporter: zipkin
storage:
  bucket: b
`})
	_, err := config.Load[appConfig](t.Context(), config.WithDir(dir))
	if err == nil {
		t.Fatal("Load() = nil, want the bad keys reported")
	}
	for _, want := range []string{
		`telemetry.traces.exporter: "zipkin" is not one of none, stdout, otlp (set by ` + filepath.Join(dir, "base.yaml") + `:12)`,
		"percnt",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load() = %v, want it to contain %q", err, want)
		}
	}
}

func TestEffective(t *testing.T) {
	t.Setenv("LOAM_ENV", "")
	var cfg service.Config
	e := cfg.Effective()
	if e.Service.Environment != "development" || e.Service.Reflection == nil || !*e.Service.Reflection || e.Service.ShutdownTimeout != 15*time.Second {
		t.Errorf("Effective() of the zero Config = environment %q, reflection %v, shutdown %v; want development, on, 15s",
			e.Service.Environment, e.Service.Reflection, e.Service.ShutdownTimeout)
	}
	cfg.Service.Environment = service.Production
	if e := cfg.Effective(); *e.Service.Reflection {
		t.Error("Effective() in production has reflection on")
	}
}
