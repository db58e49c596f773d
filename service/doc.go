// Package service assembles a production gRPC server and client from
// Loam's parts.
//
// New builds a Server from the standard Config (the `service`, `telemetry`,
// `authn`, `authz` and `cache` sections): the cache Store (Server.Cache,
// with its readiness check), recovery, telemetry, limits,
// authentication, authorization and fault injection wired in a documented
// order (see Server), the grpc.health.v1 service with per-service status,
// reflection on outside production, TLS from files it reloads on change,
// and an admin HTTP server with /metrics, /healthz, /readyz and, when
// enabled, /debug/pprof. Check compiles the access rules of the registered
// services into one table that authentication, authorization and telemetry
// share, and reports a broken contract; Listen and Serve run it first.
// Serve runs until its context is done or SIGTERM or SIGINT arrives, then
// drains: health turns NOT_SERVING, in-flight RPCs finish within
// service.shutdown_timeout, and telemetry is flushed.
//
// # Failing closed
//
// Every method needs an access rule (its proto option, or authz.rules), or
// the server does not start. A server that authenticates nobody starts
// only while every method is public, or with
// service.allow_unauthenticated in development, which opens every method
// and is refused in production; production requires an issuer or mTLS.
// authn.mtls requires TLS that verifies client certificates. A slot of the
// chain always carries a unary and a stream interceptor (Interceptor), so
// no concern guards one kind of call and leaves the other open. New
// changes no process-wide state unless WithGlobalTelemetry asks.
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
// New fails with every problem of the configuration named by key; Check
// with every problem of the contracts. Handlers should return gRPC status
// errors; one wrapped in another error reaches the client as that status
// alone, any other error as codes.Unknown with a generic message, and a
// panic as codes.Internal, while the detail goes to the log and the span.
//
// # Lifecycle
//
// Register services, then call Check (in tests), Listen (optional) and
// Serve once. Shutdown may be called any
// number of times from any goroutine; every call waits for the one drain.
// The server owns the telemetry it builds itself, and flushes it last.
package service
