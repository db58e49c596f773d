package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
)

// TestRecording: every decision goes to the counter, the span and the log.
func TestRecording(t *testing.T) {
	tests := []struct {
		name       string
		level      string
		wantLevels []string // of the allow, then the deny
	}{
		{"default levels", "", []string{"DEBUG", "INFO"}},
		{"one level", "warn", []string{"WARN", "WARN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			spans := tracetest.NewSpanRecorder()
			tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)).Tracer("test")
			var logs bytes.Buffer
			a, err := authz.New(authz.Config{Roles: map[string][]string{"harvester": {"farm.harvest"}, "planter": {"farm.plant"}}, DecisionLogLevel: tt.level}, services(farm),
				authz.WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
				authz.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
			if err != nil {
				t.Fatal(err)
			}
			for _, roles := range [][]string{{"harvester"}, {"planter"}} {
				ctx, span := tracer.Start(authn.NewContext(context.Background(), principal("bob", roles...)), "call")
				a.UnaryInterceptor(ctx, plantRequest("", 1), &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Harvest")},
					func(ctx context.Context, req any) (any, error) { return req, nil })
				span.End()
			}

			if diff := cmp.Diff(map[string]int64{"call/allow/granted": 1, "call/deny/not_granted": 1}, decisionCounts(t, reader)); diff != "" {
				t.Errorf("loam.authz.decisions mismatch (-want +got):\n%s", diff)
			}

			var gotSpans [][]attribute.KeyValue
			for _, s := range spans.Ended() {
				gotSpans = append(gotSpans, s.Attributes())
			}
			wantSpans := [][]attribute.KeyValue{
				{attribute.String("loam.authz.decision", "allow"), attribute.String("loam.authz.permission", "farm.harvest"), attribute.String("loam.authz.reason", "granted")},
				{attribute.String("loam.authz.decision", "deny"), attribute.String("loam.authz.permission", "farm.harvest"), attribute.String("loam.authz.reason", "not_granted")},
			}
			if diff := cmp.Diff(wantSpans, gotSpans, cmp.Comparer(func(a, b attribute.Value) bool { return a.Emit() == b.Emit() })); diff != "" {
				t.Errorf("span attributes mismatch (-want +got):\n%s", diff)
			}

			var gotLogs []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatal(err)
				}
				delete(rec, "time")
				gotLogs = append(gotLogs, rec)
			}
			wantLogs := []map[string]any{
				{"level": tt.wantLevels[0], "msg": "authz decision", "decision": "allow", "reason": "granted", "method": "/loam.authztest.v1.FarmService/Harvest", "permission": "farm.harvest", "principal": "bob", "role": "harvester"},
				{"level": tt.wantLevels[1], "msg": "authz decision", "decision": "deny", "reason": "not_granted", "method": "/loam.authztest.v1.FarmService/Harvest", "permission": "farm.harvest", "principal": "bob"},
			}
			if diff := cmp.Diff(wantLogs, gotLogs); diff != "" {
				t.Errorf("decision log mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// decisionCounts returns the loam.authz.decisions counter by
// source/decision/reason.
func decisionCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "loam.authz.decisions" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				src, _ := dp.Attributes.Value("source")
				d, _ := dp.Attributes.Value("decision")
				r, _ := dp.Attributes.Value("reason")
				got[src.AsString()+"/"+d.AsString()+"/"+r.AsString()] += dp.Value
			}
		}
	}
	return got
}

// TestHandlerDecisionsApart: decisions of Check in handlers are counted
// with source "handler" and logged at debug, so an alert on the denies of
// calls stays quiet on healthy traffic; deny lines are rate-limited.
func TestHandlerDecisionsApart(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	var logs bytes.Buffer
	a, err := authz.New(authz.Config{Roles: map[string][]string{"planter": {"farm.plant"}}, DenyLogRate: 5}, services(farm),
		authz.WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))),
		authz.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	if err != nil {
		t.Fatal(err)
	}
	ctx := authz.NewContext(authn.NewContext(context.Background(), principal("bob", "planter")), a)
	if err := authz.Check(ctx, "farm.read_all"); err == nil {
		t.Fatal("Check(farm.read_all) = nil, want a deny")
	}
	if logs.Len() != 0 {
		t.Errorf("a handler's deny was logged at info: %s", logs.String())
	}
	const denies = 100
	for range denies {
		a.UnaryInterceptor(ctx, plantRequest("", 1), &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Harvest")},
			func(ctx context.Context, req any) (any, error) { return req, nil })
	}
	want := map[string]int64{"handler/deny/not_granted": 1, "call/deny/not_granted": denies}
	if diff := cmp.Diff(want, decisionCounts(t, reader)); diff != "" {
		t.Errorf("loam.authz.decisions mismatch (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), "\n"); n == 0 || n > 15 {
		t.Errorf("%d deny lines logged for %d denies at 5 a second, want the burst of 10 or so", n, denies)
	}
	time.Sleep(300 * time.Millisecond)
	logs.Reset()
	a.UnaryInterceptor(ctx, plantRequest("", 1), &grpc.UnaryServerInfo{FullMethod: fullMethod(farm, "Harvest")},
		func(ctx context.Context, req any) (any, error) { return req, nil })
	if !strings.Contains(logs.String(), `"suppressed_denies":`) {
		t.Errorf("the next deny line does not say how many were dropped: %s", logs.String())
	}
}
