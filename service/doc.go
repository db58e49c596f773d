// Package service assembles a production gRPC server and client from
// Loam's parts.
//
// New builds a Server from the standard Config (the `service`, `telemetry`,
// `authn`, `authz`, `cache` and `events` sections): the cache Store
// (Server.Cache, with its readiness check), the events Bus (Server.Bus,
// drained after the calls in flight), recovery, telemetry, limits,
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
// # Limits and defaults
//
// What the server bounds, the key that sets it, and its default:
//
//	key (service.…)                  default   what it bounds
//	limits.max_recv_msg_bytes        4 MiB     a request message
//	limits.max_send_msg_bytes        4 MiB     a response message
//	limits.max_header_list_bytes     64 KiB    a request's metadata
//	limits.max_concurrent_streams    1000      calls on one connection
//	limits.max_connections           10000     open connections (then the accept queue)
//	limits.handshake_timeout         10s       TLS and HTTP/2 handshakes of a connection
//	limits.max_concurrent_calls      none      calls at once; past it RESOURCE_EXHAUSTED
//	limits.default_call_timeout      30s       a unary call whose client set no deadline
//	limits.rate_limits               none      calls per principal per method pattern
//	limits.keepalive_time            2h        idle time before the server pings a client
//	limits.keepalive_timeout         20s       the wait for that ping's answer
//	limits.keepalive_min_time        20s       the most frequent client pings tolerated
//	limits.max_connection_age        30m       a connection's life, so clients rebalance
//	limits.max_connection_age_grace  1m        calls in flight on an aged connection
//	limits.max_connection_idle       never     an idle connection
//	drain_delay                      5s        serving after NOT_SERVING, for balancers
//	shutdown_timeout                 15s       calls in flight during the drain
//	faults.max_header_delay          10s       a delay asked for by loam-fault-delay
//
// drain_delay plus shutdown_timeout leave 10s of Kubernetes' default 30s
// termination grace for the telemetry flush. The admin server reads a
// request within 5s, writes a response within 60s (a 30s CPU profile),
// closes idle connections after 60s, and answers /readyz within 3s even
// when a check hangs; a hung check is not started again until it returns.
// Refused calls are counted in loam.server.rejected_calls by reason
// (concurrency_limit, rate_limit, malformed_request) and rpc.method. A
// request whose bytes do not decode is INVALID_ARGUMENT, not INTERNAL.
//
// # Drain and reload
//
// The first SIGTERM or SIGINT drains; a second one cuts the drain short.
// When calls had to be cancelled to finish the drain, Serve and Shutdown
// return ErrCallsCut, and a service's main exits non-zero. Reload applies
// a changed configuration while the server runs, as far as it can (roles,
// rules, log level, fault injection, Loam's own limits), and names the
// keys that need a restart.
//
// # Errors
//
// New fails with every problem of the configuration named by key; Check
// with every problem of the contracts. Handlers should return gRPC status
// errors; one wrapped in another error reaches the client as that status
// alone, any other error as codes.Unknown with a generic message, and a
// panic as codes.Internal, while the detail goes to the log and the span.
//
// # Running as a command
//
// Main makes a service's main one line: it loads the service's own
// configuration type (a struct embedding Config) from the files of the
// environment --env names, builds the server with the service's
// constructor, reloads it when the files change, serves until SIGTERM, and
// exits non-zero on any error, a cut drain included. Run is the same for
// tests, with a context and arguments.
//
//	func main() { service.Main("captures", captures.NewServer) }
//
// # Lifecycle
//
// Register services, then call Check (in tests), Listen (optional) and
// Serve once. OnShutdown registers what to close once handlers have
// stopped, such as a database pool. Shutdown may be called any
// number of times from any goroutine; every call waits for the one drain.
// The server owns the telemetry it builds itself, and flushes it last.
package service
