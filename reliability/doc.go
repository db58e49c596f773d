// Package reliability is Loam's fault-tolerance suite: tests that put a
// fault between a Loam service and one of its dependencies while bounded
// load runs on loopback, and measure what the service's callers and
// handlers see. The package holds no code a service imports; its tests
// carry the build tag "fault":
//
//	LOAM_REQUIRE_SERVICES=1 go test -tags fault -count=1 ./reliability/
//
// RELIABILITY.md, at the root of the repository, holds the table of the
// last run and the command that reproduces it.
//
// # Scenarios
//
// Each test drives load, injects one fault, removes it, and computes a row:
// the requests or events, the errors callers saw, the events lost, the
// duplicates that reached a handler, and the recovery time, from the
// removal of the fault to the first success (or to the last event
// delivered). The faults:
//
//   - Redis cut off, then slowed, then back, under RPCs that read through
//     the cache (the cache package's breaker and fallback to the loader).
//   - The NATS connection reset while 10 000 events flow (JetStream
//     redelivery and the subscription's dedup), and the same for RabbitMQ
//     (a quorum queue, the driver's reconnection and republished confirms).
//   - The broker down while the Postgres outbox commits events (every
//     committed event is delivered after recovery).
//   - The identity provider's JWKS endpoint down and slow (known keys keep
//     verifying, unknown ones fail fast, no call outlives its deadline).
//   - SIGTERM to a server process, and Shutdown of one in the test,
//     during sustained load (no call in flight fails).
//   - A handler that panics on every tenth call (the server stays up).
//   - Delays and aborts from the fault injection interceptor (client
//     deadlines and the retry policy of the service config).
//   - One node of a three-node NATS JetStream cluster killed while
//     10 000 events flow through a stream with three replicas.
//
// # Faults and services
//
// Faults go through a Toxiproxy proxy in the test process
// (internal/testenv.NewProxy) between the client and the machine's shared
// service, which the suite never stops or reconfigures; the cluster is three
// nats-server processes that the test starts on free loopback ports, with
// temporary storage, and kills when it ends. A missing service skips a test
// on a laptop and fails it with LOAM_REQUIRE_SERVICES=1, as CI sets.
//
// # Assertions and measurements
//
// Zero loss, zero duplicate handler effects and zero failed calls in
// flight are asserted where the table says 0. Recovery times are measured
// and reported, bounded only by generous deadlines, so that a hang fails
// and a slow machine does not. Every test logs its rows in one format
// ("reliability: | scenario | ..."); with LOAM_RELIABILITY_OUT set to a
// file, the rows are appended to it as the Markdown rows of RELIABILITY.md.
//
// # What deduplication holds
//
// A subscription remembers the IDs it processed for its dedup window, in
// the process's memory by default: a redelivery within the window is
// acknowledged without calling the handler, and a delivery of an ID that
// another delivery is processing waits its turn. So the effect of an event
// happens once while the subscriber runs and the window lasts; a
// redelivery after a restart of the subscriber, or after the window,
// reaches the handler again unless a shared Deduper is configured. The
// suite's scenarios run within one subscriber's life and window.
package reliability
