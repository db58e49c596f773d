package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loamhq/loam/config"
)

// testConfig exercises every kind of key: defaults, validation tags,
// durations, a secret, a map and a list.
type testConfig struct {
	Service struct {
		Name       string        `koanf:"name" validate:"required"`
		ListenAddr string        `koanf:"listen_addr" default:":8080" validate:"hostname_port"`
		AdminAddr  string        `koanf:"admin_addr" default:":9090" validate:"listen_addr"`
		Port       int           `koanf:"port" default:"8080" validate:"min=1,max=65535"`
		Timeout    time.Duration `koanf:"timeout" default:"5s" validate:"min=1s"`
		Mode       string        `koanf:"mode" default:"normal" validate:"oneof=normal degraded"`
		Retries    uint8         `koanf:"retries"`
	} `koanf:"service"`
	Telemetry struct {
		Endpoint      string  `koanf:"endpoint" validate:"omitempty,url"`
		SamplingRatio float64 `koanf:"sampling_ratio" default:"1" validate:"gte=0,lte=1"`
	} `koanf:"telemetry"`
	DB struct {
		Password config.Secret `koanf:"password"`
	} `koanf:"db"`
	Labels map[string]string `koanf:"labels"`
	Hosts  []string          `koanf:"hosts"`
}

// writeDir creates a config directory holding files (name -> content).
func writeDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	return dir
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
