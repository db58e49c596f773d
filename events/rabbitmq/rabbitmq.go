// Package rabbitmq is the RabbitMQ driver of package events, on amqp091-go.
//
//	broker, err := rabbitmq.New(ctx, rabbitmq.Config{URL: "amqp://orders@rabbitmq:5672/"})
//	bus, err := events.NewBus(broker)
//
// What Loam adds to amqp091-go: the topology declared from configuration,
// pipelined publisher confirms within a bounded window, a supervisor that
// redials a lost connection and resumes consumers, and the mapping of
// events' delivery contract (attempts, delayed redelivery, settling) onto
// quorum queues.
//
// # Mapping
//
// Every topic is a routing key, the topic's name, on one durable topic
// exchange (Config.Exchange, "loam.events" by default). One exchange rather
// than one per topic keeps the topology to declare, and to grant
// permissions on, to a single object, and lets an operator bind a queue of
// their own with a wildcard ("org.example.orders.#") to watch a family of
// topics.
//
// A subscription is a durable quorum queue named after the topic and the
// subscription ("org.example.orders.v1.order_placed@billing"), bound to the
// topic's routing key, with x-delivery-limit set to MaxAttempts (or
// Config.DeliveryLimit when higher). RabbitMQ counts that limit in
// redeliveries, so the broker delivers a message at most MaxAttempts+1
// times, as driver.SubscriptionConfig asks: a message that crashes its
// consumer every time still stops, after events has had its chance to
// dead-letter it. Opening a subscription declares the queue and its binding
// (idempotent), and consumes from it on a channel of its own with manual
// acknowledgement and a prefetch (basic.qos) of the subscription's
// in-flight limit, or Config.Prefetch. Subscribers of one name share the
// queue's messages; each name has a queue, so each gets every message
// published after it was first opened.
//
// A dead-letter topic, one whose name ends in ".dlq" (events dead-letters
// the events of topic T to T.dlq by default), also gets a durable quorum
// queue named after it ("org.example.orders.v1.order_placed.dlq"), declared
// by OpenTopic, without a delivery limit: dead letters stay there until an
// operator reads or moves them, even when no subscription is open on the
// dead-letter topic. A dead-letter topic named otherwise
// (events.WithDeadLetterTopic) needs a subscription, or a queue made by an
// operator, or dead-lettering fails with ErrUnroutable and events keeps
// retrying it.
//
// # Messages
//
// The message's ID is the AMQP message-id property; its headers go in the
// AMQP headers table as they are (the CloudEvents attributes keep their
// ce- prefix of the binary content mode that package events writes),
// except content-type, which is the AMQP content-type property. The body is
// carried as is. Messages are persistent (delivery mode 2). On receipt the
// headers that the broker adds (x-delivery-count, x-death and its kin) are
// removed, and Attempt is x-delivery-count plus one.
//
// # Delivery and ordering
//
// Delivery is at least once. Ack is basic.ack; Nack holds the delivery in
// the process for its delay (it counts against the prefetch meanwhile) and
// then returns it with basic.nack and requeue; Term is basic.ack, since
// events has already dead-lettered the message. RabbitMQ has no
// publish-side deduplication: a republished ID is delivered again, and
// package events drops it by ID on the consumer side.
//
// A quorum queue delivers its messages in the order they were enqueued, and
// with one open subscriber of a name events handles them in that order per
// key, so Capabilities reports OrderedPerKey. Several subscribers of one name
// share the queue and each keeps order only among the messages it gets, and
// messages handed back (on Close, or a lost connection) may come back after
// later ones.
//
// # Publishing
//
// One channel per connection is in confirm mode. Send publishes every
// message, persistent and mandatory, without waiting, with at most
// Config.PublishWindow publishes awaiting their confirm across the
// connection, and returns once each is confirmed: concurrent Publish calls
// and PublishBatch pipeline. A message that no queue is bound for comes
// back from the broker (basic.return) and fails the Send with
// ErrUnroutable, which is not retryable: nothing would change by sending it
// again until a subscription is opened on the topic. Config.DropUnroutable
// drops such messages instead, as a broker without subscribers does.
//
// # Reconnection
//
// A supervisor watches the connection and the publishing channel. When
// either closes (the broker went away, a network cut, a missed heartbeat)
// it redials with exponential backoff between Config.ReconnectMin and
// ReconnectMax, until Close, declares the exchange again and puts the
// connection back in service; every subscription then opens a new channel,
// declares its queue again and resumes consuming. Meanwhile Send waits for
// the connection, as long as its context allows (events bounds it with its
// publish timeout). A Send whose publishes were in flight when the
// connection was lost fails with ErrConnectionLost, which is retryable:
// events sends the batch again with the same IDs, so some messages may be
// delivered twice and events drops the copies by ID. Deliveries of a lost
// channel can no longer be settled; the broker delivers them again. New
// fails when the first connection cannot be made, so that a service does
// not start with a wrong URL or password.
//
// # Configuration
//
// Config is the `rabbitmq` part of the events section
// (eventbus.Config.RabbitMQ): the URL and a password that may come from a
// secret, the exchange, the publish window, prefetch, delivery limit,
// heartbeat, connect timeout and reconnect backoff, and the connection's
// name. Its Validate names the full key of every problem, such as
// "events.rabbitmq.url". There is no setting for the queue type: queues
// are always quorum queues, the only kind that both counts deliveries
// (x-delivery-count, which Attempt comes from) and bounds them
// (x-delivery-limit), as the delivery contract needs.
//
// # Errors
//
// New's errors wrap ErrInvalidConfig for a bad Config, and otherwise name
// the broker (its password redacted) and what failed. Send returns
// ErrConnectionLost or ErrNacked (both retryable), ErrUnroutable (not
// retryable), the context's error unwrapped, or driver.ErrClosed. Opening a
// subscription whose queue exists with other arguments fails with the
// broker's PRECONDITION_FAILED, naming the queue. A Broker and what it
// opens are safe for concurrent use; Close closes the connection, after
// which everything returns driver.ErrClosed.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/loamhq/loam/events/driver"
)

// Errors of Send.
var (
	// ErrConnectionLost means the connection or the publishing channel
	// closed before the broker confirmed a message. It is retryable.
	ErrConnectionLost = errors.New("rabbitmq: connection lost before the publisher confirm")
	// ErrNacked means the broker refused a message (basic.nack), as when
	// a queue is full or the broker is out of resources. It is retryable.
	ErrNacked = errors.New("rabbitmq: the broker did not accept the message")
	// ErrUnroutable means no queue is bound for the message's topic, so
	// the broker returned it. It is not retryable.
	ErrUnroutable = errors.New("rabbitmq: no queue is bound for the topic")
)

// Option configures New with what a configuration file cannot hold.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	logger *slog.Logger
}

// WithLogger sets the logger of connection losses and reconnections. The
// default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// Broker is a connection to RabbitMQ. Create it with New.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	window  chan struct{} // one token per publish awaiting its confirm
	closing chan struct{} // closed by Close
	stopped chan struct{} // closed when the supervisor has returned

	mu     sync.Mutex
	closed bool
	sess   *session      // nil while disconnected
	up     chan struct{} // closed once sess is set
	queues map[string]string
}

// session is one connection and its publishing channel.
type session struct {
	conn    *amqp.Connection
	pub     *amqp.Channel
	lost    chan struct{} // closed when the connection or pub closes
	returns chan amqp.Return

	rmu      sync.Mutex
	returned map[string]int // routing key and message ID of returned messages
}

// New validates cfg and connects to the broker, declaring the exchange.
// It fails with an error wrapping ErrInvalidConfig for a bad cfg, and with
// the connection's error, naming the broker, when it cannot connect.
func New(ctx context.Context, cfg Config, opts ...Option) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	b := &Broker{
		cfg:     cfg,
		log:     o.logger,
		window:  make(chan struct{}, cfg.PublishWindow),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
		up:      make(chan struct{}),
		queues:  map[string]string{},
	}
	s, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	b.sess = s
	close(b.up)
	go b.supervise(s)
	return b, nil
}

// dial connects, declares the exchange and opens the publishing channel.
func (b *Broker) dial(ctx context.Context) (*session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	props := amqp.NewConnectionProperties()
	if b.cfg.Name != "" {
		props.SetClientConnectionName(b.cfg.Name)
	}
	timeout := b.cfg.ConnectTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	conn, err := amqp.DialConfig(b.cfg.dialURL(), amqp.Config{
		Heartbeat:  b.cfg.Heartbeat,
		Properties: props,
		Dial:       amqp.DefaultDial(timeout),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("rabbitmq: connecting to %s: %w", redact(b.cfg.url()), err)
	}
	s := &session{conn: conn, lost: make(chan struct{}), returns: make(chan amqp.Return, 2*b.cfg.PublishWindow), returned: map[string]int{}}
	fail := func(what string, err error) (*session, error) {
		conn.Close()
		return nil, fmt.Errorf("rabbitmq: %s on %s: %w", what, redact(b.cfg.url()), err)
	}
	if s.pub, err = conn.Channel(); err != nil {
		return fail("opening a channel", err)
	}
	if err := s.pub.ExchangeDeclare(b.cfg.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fail(fmt.Sprintf("declaring exchange %q (events.rabbitmq.exchange)", b.cfg.Exchange), err)
	}
	if err := s.pub.Confirm(false); err != nil {
		return fail("putting the channel in confirm mode", err)
	}
	s.pub.NotifyReturn(s.returns)
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	pubClosed := s.pub.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		var e *amqp.Error
		select {
		case e = <-connClosed:
		case e = <-pubClosed:
		}
		if e != nil {
			b.log.Warn("rabbitmq: connection lost; reconnecting", "error", e)
		}
		conn.Close()
		b.mu.Lock()
		if b.sess == s {
			b.sess, b.up = nil, make(chan struct{})
		}
		b.mu.Unlock()
		close(s.lost)
	}()
	return s, nil
}

// supervise redials whenever the session is lost, until Close.
func (b *Broker) supervise(s *session) {
	defer close(b.stopped)
	for {
		select {
		case <-s.lost:
		case <-b.closing:
			s.conn.Close()
			return
		}
		b.mu.Lock()
		if b.sess == s { // lost before it was put in service
			b.sess, b.up = nil, make(chan struct{})
		}
		b.mu.Unlock()
		wait := b.cfg.ReconnectMin
		for {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-b.closing:
				t.Stop()
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ConnectTimeout)
			next, err := b.dial(ctx)
			cancel()
			if err == nil {
				s = next
				break
			}
			b.log.Warn("rabbitmq: reconnecting failed", "error", err, "retry_in", wait)
			wait = min(2*wait, b.cfg.ReconnectMax)
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			s.conn.Close()
			return
		}
		b.sess = s
		close(b.up)
		b.mu.Unlock()
		b.log.Info("rabbitmq: reconnected", "broker", redact(b.cfg.url()))
	}
}

// session returns the current session, waiting for one while the
// connection is being re-established.
func (b *Broker) session(ctx context.Context) (*session, error) {
	for {
		b.mu.Lock()
		s, up, closed := b.sess, b.up, b.closed
		b.mu.Unlock()
		switch {
		case closed:
			return nil, driver.ErrClosed
		case s != nil:
			return s, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.closing:
			return nil, driver.ErrClosed
		}
	}
}

// wasReturned reports whether the broker returned the message with key and
// id. It drains the returns that arrived so far: amqp091-go hands a return
// over before the confirm that follows it.
func (s *session) wasReturned(key, id string) bool {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for {
		select {
		case r, ok := <-s.returns:
			if ok {
				s.returned[r.RoutingKey+"\x00"+r.MessageId]++
				continue
			}
		default:
		}
		break
	}
	k := key + "\x00" + id
	if s.returned[k] == 0 {
		return false
	}
	if s.returned[k]--; s.returned[k] == 0 {
		delete(s.returned, k)
	}
	return true
}

// Capabilities reports System "rabbitmq", Durable and OrderedPerKey: a
// quorum queue delivers in order to its one consumer.
func (b *Broker) Capabilities() driver.Capabilities {
	return driver.Capabilities{System: "rabbitmq", Durable: true, OrderedPerKey: true}
}

// Close closes the connection. Topics and Subscriptions opened from the
// Broker stop working.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.closing)
	b.mu.Unlock()
	<-b.stopped
	return nil
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// OpenTopic returns a Topic that publishes with the topic's name as the
// routing key. The exchange is declared with the connection; for a
// dead-letter topic (a name ending in ".dlq", events' default), OpenTopic
// also declares the queue that keeps its messages (see the package doc).
func (b *Broker) OpenTopic(ctx context.Context, name string) (driver.Topic, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, driver.ErrClosed
	}
	if len(name) > shortstr {
		return nil, fmt.Errorf("rabbitmq: topic name %.40q... is %d bytes long, above AMQP's limit of %d for a routing key", name, len(name), shortstr)
	}
	if strings.HasSuffix(name, deadLetterSuffix) {
		if err := b.declareDeadLetterQueue(ctx, name); err != nil {
			return nil, err
		}
	}
	return &topic{b: b, key: name}, nil
}

// deadLetterSuffix ends the name of the dead-letter topics that OpenTopic
// declares a queue for: events dead-letters the events of topic T to
// T+".dlq" unless told otherwise.
const deadLetterSuffix = ".dlq"

// declareDeadLetterQueue declares the quorum queue named after the
// dead-letter topic and binds it, once per Broker, waiting for the
// connection within ctx.
func (b *Broker) declareDeadLetterQueue(ctx context.Context, topic string) error {
	b.mu.Lock()
	_, done := b.queues[topic]
	b.mu.Unlock()
	if done {
		return nil
	}
	for {
		s, err := b.session(ctx)
		if err != nil {
			return err
		}
		err = func() error {
			ch, err := s.conn.Channel()
			if err != nil {
				return err
			}
			defer ch.Close()
			if _, err := ch.QueueDeclare(topic, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
				return fmt.Errorf("declaring quorum queue %q: %w", topic, err)
			}
			if err := ch.QueueBind(topic, topic, b.cfg.Exchange, false, nil); err != nil {
				return fmt.Errorf("binding queue %q to exchange %q: %w", topic, b.cfg.Exchange, err)
			}
			return nil
		}()
		if err == nil {
			b.mu.Lock()
			b.queues[topic] = topic
			b.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var amqpErr *amqp.Error
		if !s.conn.IsClosed() && errors.As(err, &amqpErr) && amqpErr.Server {
			return fmt.Errorf("rabbitmq: dead-letter topic %s: %w", topic, err)
		}
		select { // the connection broke meanwhile: wait for the next one
		case <-s.lost:
		case <-time.After(b.cfg.ReconnectMin):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// IsRetryable reports whether err is transient: a lost connection or
// channel, a nack, a timeout, or an AMQP error that the broker marks as
// recoverable.
func IsRetryable(err error) bool {
	var amqpErr *amqp.Error
	switch {
	case errors.Is(err, ErrConnectionLost), errors.Is(err, ErrNacked), errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.Is(err, ErrUnroutable), errors.Is(err, driver.ErrClosed):
		return false
	case errors.As(err, &amqpErr):
		return amqpErr.Recover || amqpErr == amqp.ErrClosed
	}
	return false
}

type topic struct {
	b   *Broker
	key string

	mu     sync.Mutex
	closed bool
}

// publish is one message awaiting its confirm.
type publish struct {
	s  *session
	dc *amqp.DeferredConfirmation
	id string
}

// Send publishes ms without waiting in between, within the Broker's window,
// and waits for every confirm. A goroutine takes the confirms in order,
// returning each window token as its publish completes, so a batch larger
// than the window flows through it.
func (t *topic) Send(ctx context.Context, ms []*driver.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed || t.b.isClosed() {
		return driver.ErrClosed
	}
	b := t.b
	pending := make(chan publish, len(ms))
	confirmed := make(chan error, 1)
	go func() {
		var first error
		for p := range pending {
			<-p.dc.Done()
			var err error
			switch {
			case p.dc.Acked():
				if !b.cfg.DropUnroutable && p.s.wasReturned(t.key, p.id) {
					err = fmt.Errorf("%w %q: message %q; open a subscription on it first, or set events.rabbitmq.drop_unroutable", ErrUnroutable, t.key, p.id)
				}
			case p.s.pub.IsClosed():
				err = ErrConnectionLost
			default:
				err = ErrNacked
			}
			if first == nil {
				first = err
			}
			<-b.window
		}
		confirmed <- first
	}()
	var err error
	for _, m := range ms {
		var s *session
		if s, err = b.session(ctx); err != nil {
			break
		}
		select {
		case b.window <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
		var p amqp.Publishing
		if p, err = toPublishing(m); err != nil {
			<-b.window
			break
		}
		var dc *amqp.DeferredConfirmation
		dc, err = s.pub.PublishWithDeferredConfirmWithContext(ctx, b.cfg.Exchange, t.key, !b.cfg.DropUnroutable, false, p)
		if err == nil && dc == nil {
			err = errors.New("rabbitmq: the publishing channel is not in confirm mode")
		}
		if err != nil {
			<-b.window
			if ctx.Err() == nil { // amqp091-go fails a publish only when the connection or channel fails
				err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
			}
			break
		}
		pending <- publish{s: s, dc: dc, id: m.ID}
	}
	close(pending)
	if err == nil {
		select {
		case err = <-confirmed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, driver.ErrClosed), b.isClosed():
		return driver.ErrClosed
	}
	return fmt.Errorf("rabbitmq: publishing to %s: %w", t.key, err)
}

// shortstr is AMQP's limit on the length of a header's key, a message-id
// or a content-type.
const shortstr = 255

// toPublishing turns m into an AMQP message. It fails, for good, when a
// field is too long for AMQP.
func toPublishing(m *driver.Message) (amqp.Publishing, error) {
	p := amqp.Publishing{MessageId: m.ID, DeliveryMode: amqp.Persistent, Body: m.Body}
	if len(m.ID) > shortstr {
		return p, fmt.Errorf("rabbitmq: message ID %.40q... is %d bytes long, above AMQP's limit of %d for a message-id", m.ID, len(m.ID), shortstr)
	}
	if len(m.Header) > 0 {
		p.Headers = make(amqp.Table, len(m.Header))
		for k, v := range m.Header {
			if len(k) > shortstr {
				return p, fmt.Errorf("rabbitmq: message %q: header key %.40q... is %d bytes long, above AMQP's limit of %d", m.ID, k, len(k), shortstr)
			}
			if k == "content-type" && v != "" {
				if len(v) > shortstr {
					return p, fmt.Errorf("rabbitmq: message %q: content-type is %d bytes long, above AMQP's limit of %d", m.ID, len(v), shortstr)
				}
				p.ContentType = v
				continue
			}
			p.Headers[k] = v
		}
	}
	return p, nil
}

func (t *topic) IsRetryable(err error) bool { return IsRetryable(err) }

func (t *topic) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return nil
}
