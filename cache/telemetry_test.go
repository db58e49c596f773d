package cache_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/loamhq/loam/cache"
)

// sums returns the points of the int64 sum called name, by their
// attributes rendered as "k=v,k=v".
func sums(t *testing.T, rm metricdata.ResourceMetrics, name string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, p := range s.DataPoints {
					out[p.Attributes.Encoded(attribute.DefaultEncoder())] = p.Value
				}
			}
		}
	}
	return out
}

func TestMetricsAndSpans(t *testing.T) {
	ctx := t.Context()
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	cfg := redisConfig(t, namespace(t), "")
	s, err := cache.Open(ctx, cfg,
		cache.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		cache.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))),
		cache.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cleanNamespace(t, cfg.Namespace)
	c := mustNew[string, string](t, s, "metered")
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil { // the first collection turns hit counting on
		t.Fatal(err)
	}
	loader := func(context.Context, string) (string, error) { return "v", nil }
	_, _ = c.GetOrLoad(ctx, "k", loader) // local miss, Redis miss, load
	_, _ = c.Get(ctx, "k")               // local hit
	_, _ = c.Get(ctx, "k")               // local hit
	cache.DropLocal(c, "k")
	_, _ = c.Get(ctx, "k") // local miss, Redis hit
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	req := sums(t, rm, "loam.cache.requests")
	for attrs, want := range map[string]int64{
		"loam.cache.name=metered,loam.cache.result=hit,loam.cache.tier=local":  2,
		"loam.cache.name=metered,loam.cache.result=miss,loam.cache.tier=local": 2,
		"loam.cache.name=metered,loam.cache.result=hit,loam.cache.tier=redis":  1,
		"loam.cache.name=metered,loam.cache.result=miss,loam.cache.tier=redis": 1,
	} {
		if req[attrs] != want {
			t.Errorf("loam.cache.requests{%s} = %d, want %d (all: %v)", attrs, req[attrs], want, req)
		}
	}
	if got := sums(t, rm, "loam.cache.loads")["loam.cache.load.result=success,loam.cache.name=metered"]; got != 1 {
		t.Errorf("loam.cache.loads{success} = %d, want 1", got)
	}
	names := map[string]int{}
	for _, sp := range spans.Ended() {
		names[sp.Name()]++
	}
	if names["cache.load"] != 1 || names["GET"] != 2 || names["SET"] != 1 {
		t.Errorf("spans = %v; want one cache.load, two GET and one SET", names)
	}
}
