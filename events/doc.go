// Package events will publish and consume typed protobuf events.
//
// Status: not built yet. Nothing in this package works, and nothing else in
// Loam depends on it. It will own typed events marked with the
// loam.options.v1.event message option, their CloudEvents envelope, and the
// delivery policy (retries, backoff, dead-lettering, deduplication, tracing),
// written once above a driver interface that NATS JetStream, RabbitMQ, a
// Postgres outbox relay and an in-memory bus implement.
package events
