package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

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
						d, _ := dp.Attributes.Value("decision")
						r, _ := dp.Attributes.Value("reason")
						got[d.AsString()+"/"+r.AsString()] += dp.Value
					}
				}
			}
			if diff := cmp.Diff(map[string]int64{"allow/granted": 1, "deny/not_granted": 1}, got); diff != "" {
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
