// Package telemetry sets up traces, metrics and logs for a Loam service, on
// OpenTelemetry.
//
// New (or Setup, which also installs the OpenTelemetry globals) builds the
// tracer, meter and logger providers from the `telemetry` config section:
// OTLP over gRPC or HTTP, stdout, or nothing; a parent-based ratio sampler;
// W3C trace context and baggage propagation; and a resource naming the
// service with service.name, service.version and
// deployment.environment.name. Prometheus exposition of the metrics is one
// switch away (Telemetry.MetricsHandler).
//
// What Loam adds on top of the OpenTelemetry SDK:
//
//   - No-op by default. With nothing configured every provider is the
//     OpenTelemetry API's no-op, so instrumented code costs close to nothing
//     and still passes incoming trace context on.
//   - A lean gRPC stats handler (Telemetry.ServerHandler and ClientHandler)
//     that records the semantic-convention rpc.server.call.duration and
//     rpc.client.call.duration with attribute sets computed once per method
//     and status code, sets span attributes only on sampled spans, skips
//     health checks and reflection, and can treat public endpoints' incoming
//     trace context as a link rather than a parent. BENCHMARKS.md compares it
//     with otelgrpc.
//   - An slog handler (NewLogHandler) that stamps trace_id and span_id on
//     every record and can bridge records to the OpenTelemetry logger.
//   - Inject, Extract and Link for trace context in message headers.
//
// # Configuration
//
// Config is the `telemetry` section. Its zero value exports nothing. Details
// of OTLP exporters that the section does not name (headers, certificates,
// timeouts) come from the standard OTEL_EXPORTER_OTLP_* environment
// variables, and OTEL_RESOURCE_ATTRIBUTES adds resource attributes.
//
// # Lifecycle
//
// A *Telemetry is safe for concurrent use. Shutdown flushes and stops the
// exporters; call it after the server has drained, with a deadline.
package telemetry
