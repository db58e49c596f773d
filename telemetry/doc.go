// Package telemetry will set up traces, metrics and logs for Loam services.
//
// Status: not built yet. Nothing in this package works, and nothing else in
// Loam depends on it. It will own OpenTelemetry setup (tracer, meter and
// logger providers, OTLP and Prometheus exporters), slog correlation with the
// active span, and the propagation helpers that carry W3C trace context
// through gRPC and message headers.
package telemetry
