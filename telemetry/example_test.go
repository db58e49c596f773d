package telemetry_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/loamhq/loam/telemetry"
)

func ExampleNewLogHandler() {
	// Drop the time so the output is stable.
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	log := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime}), nil))

	// In a handler, ctx carries the RPC's span.
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	}))
	log.InfoContext(ctx, "capture stored", "capture_id", "c-1")
	// Output:
	// {"level":"INFO","msg":"capture stored","capture_id":"c-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}
}

func ExampleNew() {
	// The zero Config exports nothing: every provider is a no-op.
	tel, err := telemetry.New(context.Background(), telemetry.Config{}, telemetry.WithService("trees", "1.0.0", "development"))
	if err != nil {
		panic(err)
	}
	defer tel.Shutdown(context.Background())
	_, span := tel.TracerProvider().Tracer("trees").Start(context.Background(), "plant")
	fmt.Println("recording:", span.IsRecording(), "metrics endpoint:", tel.MetricsHandler() != nil)
	// Output: recording: false metrics endpoint: false
}

func ExampleInject() {
	// A producer puts its trace context into the message headers...
	producer := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1},
		SpanID:     trace.SpanID{2},
		TraceFlags: trace.FlagsSampled,
	}))
	// Setup installs the W3C propagator that Inject and Extract use.
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{})
	if err != nil {
		panic(err)
	}
	defer tel.Shutdown(context.Background())
	headers := propagation.MapCarrier{}
	telemetry.Inject(producer, headers)
	fmt.Println(headers.Get("traceparent"))

	// ...and the consumer continues it.
	consumer := telemetry.Extract(context.Background(), headers)
	fmt.Println(trace.SpanContextFromContext(consumer).TraceID())
	// Output:
	// 00-01000000000000000000000000000000-0200000000000000-01
	// 01000000000000000000000000000000
}
