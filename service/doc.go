// Package service assembles a production gRPC server and client from
// Loam's parts.
//
// New builds a Server from the standard Config (the `service`, `telemetry`,
// `authn` and `authz` sections; more sections join as their packages land):
// recovery, telemetry, limits, authentication, authorization and fault
// injection wired in a documented order (see Server), the grpc.health.v1
// service with per-service status, reflection on outside production, and an
// admin HTTP server with /metrics, /healthz, /readyz and, when enabled,
// /debug/pprof. Serve runs until its context is done or SIGTERM or SIGINT
// arrives, then drains: health turns NOT_SERVING, in-flight RPCs finish
// within service.shutdown_timeout, and telemetry is flushed.
//
// Dial returns a client connection with the same telemetry, a default
// deadline, retries of idempotent methods on UNAVAILABLE through gRPC's
// service config, and a slot for per-RPC credentials, such as the service's
// own token from authn.NewClientCredentials.
//
// What Loam adds on top of grpc-go: one constructor with a fixed,
// documented interceptor order; panics and stray errors that never leak
// internals to the client; draining that load balancers can follow; retry
// policy derived from the proto's idempotency_level; and fault injection
// (delays and aborts by rule or by request header) that refuses to run in
// production unless explicitly allowed.
//
// # Configuration
//
// Config holds the sections; Settings is the `service` section, whose
// fields document their keys and defaults. Embed Config in the service's own
// configuration struct and load it with config.Load.
//
// # Errors
//
// New fails with every problem of the configuration named by key. Handlers
// should return gRPC status errors; any other error reaches the client as
// codes.Unknown with a generic message, and a panic as codes.Internal, while
// the detail goes to the log and the span.
//
// # Lifecycle
//
// Register services, then call Serve once. Shutdown may be called any
// number of times from any goroutine; every call waits for the one drain.
// The server owns the telemetry it builds itself, and flushes it last.
package service
