// Package cache gives Loam services one typed cache that follows the
// caching guidelines by itself: two tiers, stampede protection, TTL with
// jitter, negative caching, stale-while-revalidate, invalidation across
// processes, and a Redis outage that degrades the service instead of
// failing its requests.
//
// A process opens one Store from the `cache` section of its configuration
// and makes a typed Cache per kind of value from it:
//
//	store, err := cache.Open(ctx, cfg.Cache, cache.WithMeterProvider(mp))
//	defer store.Close()
//	captures, err := cache.New[string, *capturesv1.Capture](store, "captures", cache.WithTTL(time.Minute))
//
//	c, err := captures.GetOrLoad(ctx, id, func(ctx context.Context, id string) (*capturesv1.Capture, error) {
//		row, err := db.Capture(ctx, id)
//		if errors.Is(err, sql.ErrNoRows) {
//			return nil, cache.ErrNotFound // remembered for the negative TTL
//		}
//		return row, err
//	})
//
// # Tiers
//
// Each Cache keeps values in the process, in an otter cache bounded by
// cache.local_max_entries, and, when cache.redis.addresses is set, in
// Redis through rueidis (standalone, cluster or sentinel), shared by every
// process of the namespace. Get and GetOrLoad look in the process, then in
// Redis, and GetOrLoad then calls the loader and writes its answer to both
// tiers. Without Redis the cache is in-process only, which is the local
// default: nothing needs to run.
//
// Keys in Redis are namespace:cache-name:version:key. The version is "1"
// or WithVersion's, followed for the built-in codecs by a fingerprint of
// the value's schema: the protobuf descriptors of the message and of every
// message it contains, or the Go type as encoding/json sees it. A release
// that changes the schema reads and writes other keys, and never decodes
// bytes written by the old one; while both run, each keeps its own entries.
// Values are encoded with protobuf (deterministic) for messages, as they
// are for []byte and string, and with encoding/json otherwise; WithCodec
// replaces the choice. An entry carries a 10-byte header (format, kind,
// end of freshness) before the value.
//
// # Loading
//
// Concurrent calls that miss the process for one key share one load: one
// Redis read and at most one loader call per process, through otter's
// loading (Cache.Get with a Loader). A caller whose context ends stops
// waiting and gets the context's error; the load goes on for the others,
// and when it failed because the context of the caller that ran it ended,
// a waiter with a live context loads again. A loader that panics fails the
// load for its caller and waiters with ErrLoaderPanic; its stack goes to
// the log and the span. Either way the key is released: nothing waits for
// a load that will not finish.
//
// A loader that returns ErrNotFound has that answer kept, in both tiers,
// for the negative TTL (cache.negative_ttl, 30s by default), shorter than
// the TTL of values. Every TTL is shortened by a random share up to
// cache.jitter (10%), so entries written together do not expire
// together. With cache.stale, GetOrLoad serves a value for up to that long
// past its TTL while one background call refreshes it
// (stale-while-revalidate), bounded by cache.refresh_timeout; a failed
// refresh keeps the value and retries a second later. An entry loaded from
// Redis is fresh in the process only until it would have expired in
// Redis: the writer's end of freshness travels in the header.
//
// An entry in Redis that cannot be decoded (written by other software, or
// corrupted) is poisoned: it is counted, logged, deleted, and loaded again;
// it is never returned.
//
// # Invalidation across processes
//
// Set and Delete change this process and Redis; Redis's client tracking in
// broadcast mode (RESP3, Redis 6 or later) tells every other process of
// the namespace, whose in-process copy is dropped: its next read goes to
// Redis. The same notice comes when a key expires or is evicted in Redis.
// A load under way when its key is invalidated is discarded rather than
// stored. On loopback the change reaches the other process's in-process
// tier in about half a millisecond to a few milliseconds on average
// (BENCHMARKS.md has the measure).
//
// A process that loses its connection may miss notices. It keeps serving
// what it holds while Redis is away, and drops every in-process entry of
// the Store when Redis answers again, before it uses Redis, so an entry
// copied before the outage is never served past it. A Set or Delete whose
// Redis write failed is remembered (up to cache.redis.max_pending_writes
// keys, past which the whole namespace is deleted instead) and replayed as
// a deletion on recovery, which reaches the other processes in turn.
//
// What this does not cover: a loader that reads the source before a Delete
// and writes Redis after it can put the older value back until its TTL
// (the write uses SET NX, so it never replaces a newer Set); keep TTLs in
// line with how stale a value may be.
//
// # Redis outages
//
// Every Redis call is bounded by cache.redis.timeout (100ms). After
// cache.redis.failure_threshold (5) failures in a row a circuit breaker
// opens: calls skip Redis at once, reads fall back to the process and the
// loader, and writes stay in the process. A probe pings Redis every
// cache.redis.retry_interval (1s) and closes the breaker when it answers
// within cache.redis.timeout: a Redis slower than that is as unusable as
// one that is down, so the breaker stays open while it is slow instead of
// closing on each probe and making the next callers wait out the timeout.
// No request fails because Redis is down. A Store opened while Redis is
// down opens all the same and connects in the background.
//
// Store.Check is the readiness check: nil when Redis answers in time, an
// *OutageError while it does not. cache.redis.outage says what the outage
// means: degraded (the default: Degraded reports true, and the service
// stays ready) or not_ready.
//
// # Claims
//
// Store.Claims gives the processes of a namespace a shared set of claimed
// and done keys in Redis, so that work reaching several replicas takes
// effect once: Claim (atomic, one round trip), Done for a window, Release
// of one's own claim. A Loam service uses it for the consumer-side
// deduplication of events when events.dedup.store is redis. Claims go
// through the Store's breaker and fail fast with ErrUnavailable during an
// outage; they live outside the namespace's cache keys, so the flush after
// an outage does not forget them.
//
// # Telemetry
//
// Metrics, through the meter provider of WithMeterProvider (default the
// OpenTelemetry global): loam.cache.requests by loam.cache.tier (local,
// redis) and loam.cache.result (hit, miss, error); loam.cache.loads by
// loam.cache.load.result (success, not_found, error, panic);
// loam.cache.load.duration and loam.cache.redis.duration (by
// db.operation.name, and error.type on failure); loam.cache.poisoned;
// loam.cache.invalidations by source (remote, flush);
// loam.cache.local.entries; and loam.cache.redis.available. All carry
// loam.cache.name. In-process hits are counted from the first collection
// of the metrics on, so that with no reader installed a hit costs what an
// otter hit costs; the latency of the in-process tier is not recorded per
// call (it is in the benchmarks). Spans, through WithTracerProvider:
// one client span per Redis call (GET, SET, DEL, with db.system.name
// redis) and a cache.load span per loader call.
//
// # Configuration
//
// Config is the `cache` section; its `default` and `validate` tags let
// config.Load and `loam config validate` report a bad value with its file
// and line, and Config.Validate checks the rules that span fields, naming
// each key. cache.caches.<name> overrides ttl, negative_ttl, stale and
// local_max_entries for one cache; it wins over the options given to New,
// which win over the section.
//
// # Errors
//
// ErrNotFound: a loader said the source has no value (remembered). ErrMiss:
// Get found nothing. ErrLoaderPanic: the loader panicked. ErrClosed: the
// Store is closed. ErrInvalidConfig: Open or New refused a setting. A
// loader's own errors are returned as they are and never cached; context
// errors are returned unwrapped. Redis errors are never returned by reads
// or writes: they become misses and best-effort writes, and show in
// Check, the metrics, the spans and the log.
//
// # Concurrency, ownership and Close
//
// Store and Cache are safe for concurrent use. The caller that opens a
// Store closes it; caches belong to their Store and need no closing. Close
// closes the Redis client, stops the probe and drops every in-process
// entry; afterwards every call on the Store and its caches returns
// ErrClosed. Writes still waiting for replay are dropped then: Redis
// expires them by their TTL.
//
// # What Loam adds to its libraries
//
// otter holds the in-process tier and does the loading, sharing a load
// between callers, surviving loader panics and cancellations, discarding a
// load that an invalidation overtook, and refreshing in the background;
// rueidis talks to Redis and delivers the tracking notices. Loam adds the
// second tier behind the first, with versioned, namespaced keys and the
// entry header; negative caching and jitter; the breaker, the probe, the
// flush on reconnection and the replay of lost writes; poisoned-entry
// handling; readiness; and the telemetry. The breaker is Loam's own: it is
// closed by a background probe rather than by live requests, so recovery
// does not wait for traffic and never makes a request pay for a probe.
package cache
