package config_test

import (
	"context"
	"testing"

	"github.com/loamhq/loam/config"
)

// BenchmarkLoad measures a full load (two YAML files, defaults, decoding,
// validation), what a service pays at start-up and on every reload.
func BenchmarkLoad(b *testing.B) {
	dir := writeDir(b, map[string]string{
		"base.yaml":       "service:\n  name: captures\n  port: 9000\nlabels:\n  team: media\nhosts: [a, b]\n",
		"production.yaml": "service:\n  port: 9100\n  timeout: 2s\ntelemetry:\n  endpoint: http://collector:4318\n",
	})
	ctx := context.Background()
	opts := []config.Option{config.WithDir(dir), config.WithEnvironment("production")}
	for b.Loop() {
		if _, err := config.Load[testConfig](ctx, opts...); err != nil {
			b.Fatal(err)
		}
	}
}
