// Package driver defines what an events backend implements. Applications
// use package events; this package is for the authors of backends.
//
// A backend is a Broker that opens Topics (to send messages) and
// Subscriptions (to receive them). Drivers move bytes and headers and say
// which errors are worth retrying; they do not retry, back off, trace,
// deduplicate or dead-letter. Package events does all of that once, above
// every driver, so every backend behaves the same way.
//
// # Messages
//
// A Message is an event in CloudEvents binary content mode: the attributes
// are in Header (ce-id, ce-type, ...), the data is Body. Drivers carry
// Header and Body verbatim: every key and value that was sent comes back
// exactly, and nothing else does, so a driver that uses broker headers of its
// own (Nats-Msg-Id, an AMQP message-id) strips them on receipt. Body is
// arbitrary bytes, not necessarily UTF-8. ID and Key are copies of ce-id and
// the ordering key that the driver may use for the broker's own features:
// deduplication of a republished ID, and routing or partitioning by key.
//
// # Delivery
//
// Delivery is at least once. A received message stays the driver's until it
// is settled with exactly one of Ack (done), Nack (deliver it again, after a
// delay) or Term (never deliver it again; events has already dead-lettered
// it). A message that is never settled, because the process died, comes
// back once the broker's acknowledgement deadline passes. Drivers report how
// many times the broker delivered a message in Message.Attempt; events
// compares that with SubscriptionConfig.MaxAttempts, so the broker's own
// delivery limit, when it has one, must stay above MaxAttempts (see
// SubscriptionConfig).
//
// # Errors
//
// Methods return ErrClosed (wrapped or not) once the value they are called
// on, or its Broker, is closed. Context errors are returned unwrapped.
// IsRetryable reports whether an error is transient (a broken connection, a
// timeout, a broker that is starting); events retries those with backoff and
// gives up on the others.
//
// # Concurrency
//
// Every method of Broker, Topic and Subscription may be called from many
// goroutines at once. Close may be called more than once; calls after the
// first return nil.
//
// # How to add a driver
//
//  1. Create a package under events/ named after the backend, not after its
//     client library (events/natsjs, not events/nats), with an explicit
//     constructor that returns a Broker: New(ctx, Config) or New(conn,
//     ...Option). There is no registry.
//  2. Implement Broker, Topic and Subscription. OpenTopic and
//     OpenSubscription provision what the broker needs (a stream, an
//     exchange, a queue, a durable consumer) and must be idempotent: they
//     run every time a process starts. A subscription Name is durable:
//     reopening it resumes where the last one stopped, and two open
//     subscriptions with one Name share the messages between them.
//  3. Send returns only once the broker has durably accepted every message
//     (a JetStream PubAck, an AMQP publisher confirm, a committed row):
//     that is what lets events promise at-least-once delivery. Pipeline
//     the messages of one Send, and of concurrent Sends, within a bounded
//     window rather than waiting for each in turn.
//  4. Receive blocks until at least one message is available, the context is
//     done or the subscription is closed. Fill Attempt from the broker's
//     delivery count. When the broker has an acknowledgement deadline, keep
//     it extended for the messages returned by Receive until they are
//     settled: events may hold one for a long handler, or while the events
//     before it of its key are handled. Close stops receiving and hands
//     back what the driver had buffered but not returned from Receive (a
//     Nack without delay, or the broker's equivalent), so the next
//     subscriber gets it soon.
//  5. Fill Capabilities truthfully; the conformance suite uses them to
//     decide what to expect.
//  6. Add a ten-line test that calls drivertest.RunConformanceTests with a
//     harness that creates uniquely named topics on the real broker,
//     removes them afterwards, and, for a networked broker, connects
//     through a proxy that the harness can cut and restore.
//  7. Give the driver a Config section if it has settings, and teach
//     events/eventbus to open it.
//
// # Mapping the backends
//
// How the backends Loam plans for fit the interface:
//
//   - NATS JetStream (events/natsjs): a topic is a subject in a stream;
//     ID is Nats-Msg-Id, which the stream deduplicates; a subscription is a
//     durable pull consumer with MaxDeliver = MaxAttempts+1; Ack, Nak with
//     delay and Term are JetStream's; Attempt is the delivery count from the
//     message's metadata; InProgress keeps leases.
//   - RabbitMQ (amqp091-go): a topic is a routing key on a durable topic
//     exchange; a subscription is a quorum queue named after the
//     subscription and the topic, bound to that key, with x-delivery-limit =
//     MaxAttempts (RabbitMQ counts redeliveries, so that is MaxAttempts+1
//     deliveries) and a prefetch (basic.qos) of MaxInFlight. Send publishes
//     with publisher confirms, pipelined, and returns once every confirm
//     (ack) is in; a nack or a lost channel is a retryable error. ID is the
//     AMQP message-id, Header the headers table, Body the body as is.
//     Attempt is x-delivery-count plus one. Ack is basic.ack; Nack holds the
//     delivery for its delay and then basic.nack with requeue; Term is
//     basic.ack, since events has already dead-lettered the message (a
//     reject would dead-letter it a second time through a broker DLX). The
//     driver re-dials connections and re-opens channels after a failure;
//     deliveries of the old channel can no longer be settled and come back
//     from the broker. Quorum queues keep the order of one queue, so
//     OrderedPerKey holds.
//   - Postgres outbox (pgx v5): a Broker that wraps another. OpenTopic
//     returns a Topic whose Send inserts the messages into an outbox table,
//     inside the application's transaction carried by the context (or one
//     of its own), so an event is committed exactly when the business
//     change is; a relay reads committed rows in order, sends them through
//     the wrapped Broker's Topic with the same IDs (so a relay that crashes
//     after sending and before marking causes a duplicate that brokers and
//     subscribers drop), in order per key, and marks them sent.
//     OpenSubscription and Capabilities are the wrapped Broker's.
//     Rolled-back rows are never seen, so never sent.
//   - In memory (events/memory): queues per subscription name in the
//     process, for tests and local runs.
package driver

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned by a method called after Close of the value, or of
// its Broker.
var ErrClosed = errors.New("events: closed")

// Message is one event on the wire.
type Message struct {
	// ID is the event's unique ID (the CloudEvents id, also in Header). A
	// broker with publish-side deduplication uses it to drop a republished
	// message; every broker returns it with the message.
	ID string
	// Key is the event's ordering key, empty for none. A driver may use it
	// to route or partition; it need not return it, since Header carries it
	// too.
	Key string
	// Header holds the CloudEvents attributes and the trace context, and
	// comes back exactly as sent.
	Header map[string]string
	// Body is the event data, arbitrary bytes.
	Body []byte

	// Attempt is set on received messages: how many times the broker has
	// delivered this message, this delivery included, so 1 on the first.
	Attempt int
	// AckID is set on received messages: whatever the driver needs to
	// settle the message. Package events never looks inside.
	AckID any
}

// Capabilities describes what a backend guarantees beyond at-least-once
// delivery.
type Capabilities struct {
	// System names the messaging system in telemetry, as the OpenTelemetry
	// attribute messaging.system: "nats", "rabbitmq", "loam.memory".
	System string
	// Durable means messages survive the subscriber: a subscription closed
	// and reopened with the same name receives what was published in
	// between and what it had received without settling.
	Durable bool
	// OrderedPerKey means a subscription receives messages of one key in the
	// order they were sent (for one open subscriber of the Name), so events
	// can process them in that order.
	OrderedPerKey bool
}

// Broker is a connection to a messaging backend.
type Broker interface {
	// OpenTopic returns a Topic to send messages to the named topic,
	// provisioning it when the backend needs that. Topic names are dotted
	// words of letters, digits, '_' and '-', such as
	// "org.example.orders.v1.order_placed".
	OpenTopic(ctx context.Context, name string) (Topic, error)
	// OpenSubscription returns a Subscription that receives the messages
	// sent to topic from now on, provisioning the durable subscription
	// cfg.Name when needed, or resuming it when it exists.
	OpenSubscription(ctx context.Context, topic string, cfg SubscriptionConfig) (Subscription, error)
	// Capabilities reports what the backend guarantees.
	Capabilities() Capabilities
	// Close releases the connection. Topics and Subscriptions opened from
	// the Broker stop working; callers close them first.
	Close() error
}

// SubscriptionConfig is what events asks of a subscription.
type SubscriptionConfig struct {
	// Name is the durable subscription's name, such as the consuming
	// service's: subscribers with the same Name on a topic share its
	// messages, each message going to one of them; each Name gets every
	// message.
	Name string
	// MaxAttempts is how many deliveries events allows a message before it
	// dead-letters it. A broker with a delivery limit of its own (JetStream
	// MaxDeliver, a quorum queue's x-delivery-limit) sets it above
	// MaxAttempts, at MaxAttempts+1, so events always sees the last attempt
	// and can dead-letter it, while a message that crashes its consumer
	// every time still stops eventually.
	MaxAttempts int
	// MaxInFlight is how many messages events keeps in hand at once; a
	// driver sizes its prefetch and the broker's unacknowledged limit from
	// it.
	MaxInFlight int
}

// Topic sends messages to one topic.
type Topic interface {
	// Send sends ms and returns once the broker has durably accepted every
	// one of them, or with an error when it could not confirm one (some of
	// ms may have been accepted: events sends them again with the same IDs).
	// It does not retry. It must not keep ms after it returns.
	Send(ctx context.Context, ms []*Message) error
	// IsRetryable reports whether err, returned by Send, is transient.
	IsRetryable(err error) bool
	// Close releases the Topic; Send then returns ErrClosed.
	Close() error
}

// Subscription receives the messages of one topic for one subscription name.
type Subscription interface {
	// Receive returns between 1 and max messages, blocking until there is at
	// least one, ctx is done (it returns ctx.Err()) or the Subscription is
	// closed (ErrClosed).
	Receive(ctx context.Context, max int) ([]*Message, error)
	// Ack settles m as processed: it is not delivered again.
	Ack(ctx context.Context, m *Message) error
	// Nack returns m to the broker to be delivered again, no sooner than
	// delay from now. A broker that cannot schedule a redelivery may hold m
	// for delay before returning it, without blocking the caller.
	Nack(ctx context.Context, m *Message, delay time.Duration) error
	// Term settles m as failed for good: it is not delivered again. Events
	// calls it after dead-lettering m itself.
	Term(ctx context.Context, m *Message) error
	// IsRetryable reports whether err, returned by Receive, is transient.
	IsRetryable(err error) bool
	// Close stops receiving and hands the messages the driver had buffered,
	// but not returned from Receive, back to the broker. Events calls it
	// once it has settled what it could; settling a message after Close
	// returns ErrClosed or does nothing, and the broker delivers that
	// message again later.
	Close() error
}
