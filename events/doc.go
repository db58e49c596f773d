// Package events publishes and consumes typed protobuf events, carried as
// CloudEvents, traced from producer to consumer, and delivered at least
// once under one retry and dead-letter policy on every backend.
//
// An event is a generated protobuf message marked with the
// loam.options.v1.event option, which names its CloudEvents type and the
// field that holds its ordering key:
//
//	message OrderPlaced {
//	  option (loam.options.v1.event) = {
//	    type: "org.example.orders.v1.order_placed"
//	    key_field: "order_id"
//	  };
//	  string order_id = 1;
//	}
//
// A service opens one Bus over a driver, a Topic per event type, publishes,
// and subscribes with a handler:
//
//	bus, err := events.NewBus(memory.New(), events.WithSource("//orders"))
//	orders, err := events.NewTopic[*orderspb.OrderPlaced](ctx, bus)
//	err = orders.Publish(ctx, &orderspb.OrderPlaced{OrderId: "o-1"})
//	sub, err := orders.Subscribe(ctx, "billing", func(ctx context.Context, e *events.Event[*orderspb.OrderPlaced]) error {
//		return bill(ctx, e.Data)
//	})
//
// Drivers live in sub-packages: memory (in process, for tests and local
// runs), natsjs (NATS JetStream, with an embedded server for local runs),
// rabbitmq (RabbitMQ quorum queues through amqp091-go), and pgoutbox (a Postgres transactional outbox in front of another
// driver: an event commits with the application's transaction, and a relay
// sends it on). Package eventbus opens a Bus from the `events` configuration
// section. Package driver says what a backend implements, and drivertest
// checks that it does.
//
// # Envelope
//
// Events travel in CloudEvents 1.0 binary content mode: the data is the
// message body, protobuf (content-type application/protobuf) or, with
// WithJSON, protobuf JSON (application/json); the attributes are headers
// named as the CloudEvents NATS and HTTP bindings name them: ce-id (a
// UUIDv7 unless WithID sets it), ce-source (WithSource), ce-type (the event
// option), ce-specversion (1.0), ce-time, ce-subject (WithSubject),
// ce-dataschema (the protobuf type URL, as the CloudEvents protobuf format
// recommends, in absolute form: https://type.googleapis.com/<full name>),
// ce-partitionkey (the ordering key, as the partitioning extension names
// it) and ce-<name> for extensions (WithExtension). A CloudEvents SDK reads
// what Loam publishes, and Loam reads what such an SDK publishes in binary
// mode with protobuf or JSON data; the tests check both ways with the
// CloudEvents Go SDK.
//
// Attribute values with a space, '"', '%' or a character outside printable
// ASCII are percent-encoded, as the NATS and HTTP bindings require, and
// decoded on receipt (a value in double quotes, as older writers sent, is
// accepted too). SDKs that predate that rule, such as the Go SDK at
// v2.16, show such values still encoded; keep IDs, sources, subjects and
// keys in plain ASCII where other SDKs read them.
//
// # Tracing and metrics
//
// Publish starts a producer span "send <topic>" and writes its W3C trace
// context (traceparent, tracestate, baggage) into the headers; each handler
// call runs in a consumer span "process <topic>" whose parent is the
// producer's span, so one trace goes from the request that published to
// the handler and on. Metrics follow the OpenTelemetry messaging
// conventions: messaging.client.sent.messages,
// messaging.client.operation.duration (publishing),
// messaging.client.consumed.messages, messaging.process.duration (handler
// latency); and Loam adds loam.events.retries, loam.events.dead_letters (by
// cause) and loam.events.duplicates. Providers come from WithTracerProvider
// and WithMeterProvider, and cost next to nothing when they record nothing.
//
// # Delivery policy
//
// Delivery is at least once, on every driver. The policy is applied here,
// once, above the drivers, in this order:
//
//  1. A message that is not a CloudEvent of the topic's type (a missing
//     attribute, another type, data that does not decode) is dead-lettered
//     at once, with cause "malformed".
//  2. An event whose ID the subscription processed within the dedup window
//     is acknowledged without calling the handler (a redelivery, or a
//     producer that published one ID twice). One that another delivery is
//     processing right now is handed back to come again later.
//  3. The handler runs. nil acknowledges the event.
//  4. An error wrapped by Permanent dead-letters the event at once, with
//     cause "permanent".
//  5. Any other error, a panic or the handler timeout is a failed attempt.
//     While attempts remain (WithMaxAttempts, 5 by default), the event is
//     retried after an exponential backoff with jitter: WithBackoff's
//     initial delay, doubled per attempt up to its cap, half of it random.
//  6. The last failed attempt dead-letters the event, with cause
//     "max_attempts".
//
// Dead-lettering publishes a copy of the event, headers and body unchanged,
// to the dead-letter topic (the topic's name followed by ".dlq", or
// WithDeadLetterTopic), adding the headers loam-dead-letter-reason (the
// error), -cause, -attempts, -topic, -subscription and -time; then it
// settles the original for good. If the copy cannot be published, the
// subscription holds the original and tries again with backoff until it
// can, or until Close hands the original back to the broker: no event is
// dropped silently. Turning dead-lettering off (an empty
// WithDeadLetterTopic) drops such events after a log record and the
// dead-letter counter.
//
// Retries go back to the broker with a delay (JetStream's Nak with delay),
// so the retry survives a restart and the slot is free meanwhile, and the
// attempt number is the broker's delivery count. The broker's own limit is
// set one above the policy's, so a message whose handler crashes the
// process every time is still dead-lettered, on the delivery after the
// last attempt.
//
// # Ordering
//
// When the event type declares a key field and the driver keeps the order
// of one key (driver.Capabilities.OrderedPerKey), a subscription handles
// the events of one key one at a time, in the order received, and retries
// a failed event in place, holding back the later events of its key until
// it succeeds or is dead-lettered. Events of different keys run
// concurrently. The order holds for one running subscriber of a
// subscription name; replicas that share a name share its events without
// coordinating by key. WithUnordered turns this off for a subscriber that
// does not need it.
//
// # Deduplication
//
// Subscribers remember processed event IDs, per subscription, for
// WithDedupWindow (10 minutes by default), in a Deduper: by default in the
// process's memory (NewMemoryDeduper), which holds for one replica until it
// restarts. A Deduper over a shared store, such as Redis, holds across
// replicas and restarts; WithDeduper plugs one in. A Loam service gets one
// from configuration: events.dedup.store: redis keeps the IDs in the
// Redis of its cache section (cache.Store.Claims). Publishing with WithID
// makes a producer's retries safe: brokers that deduplicate on publish (a
// JetStream stream's duplicate window) drop the copy, and subscribers skip
// any that gets through.
//
// # Concurrency and shutdown
//
// A Bus, its Topics and its Subscriptions are safe for concurrent use. A
// Subscription handles up to WithConcurrency events at once (16 by
// default) and holds no more than that from the broker. Subscription.Close
// stops receiving and drains: it waits for running handlers to finish and
// settle their events, within its context; when the context ends first, it
// cancels the handlers' contexts and leaves their events to the broker to
// deliver again. Bus.Close drains every Subscription, then closes the
// topics and the driver, which the Bus owns. After Close, Publish,
// NewTopic and Subscribe return ErrClosed.
//
// # Errors
//
// Publish returns ctx.Err() unwrapped when its context ends, ErrClosed
// after Close, an error wrapping ErrInvalid for a bad argument, and
// otherwise the driver's error, wrapped, once transient errors have been
// retried for the publish timeout (WithPublishTimeout). NewTopic wraps
// ErrNotEvent for a message type without a valid event option. Handlers
// see their events' problems as dead letters, not as errors; a
// Subscription that stops because its driver failed for good closes Done
// and reports why in Err.
//
// # Configuration
//
// A Bus is configured in code with options. The `events` section of a
// service's configuration (driver, source, delivery policy, driver
// settings) is eventbus.Config, and eventbus.Open turns it into a Bus.
package events
