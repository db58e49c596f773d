package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/loamhq/loam/events/driver"
)

// queueName is the quorum queue of subscription name on topic.
func queueName(topic, name string) string { return topic + "@" + name }

// brokerHeaders are the headers that RabbitMQ adds to a message, which the
// driver removes on receipt.
var brokerHeaders = []string{"x-delivery-count", "x-death", "x-first-death-exchange", "x-first-death-queue",
	"x-first-death-reason", "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason"}

// OpenSubscription declares the quorum queue of cfg.Name on topic and its
// binding, and starts consuming from it. While the connection is being
// re-established it waits for it, within ctx.
func (b *Broker) OpenSubscription(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
	maxAttempts := max(cfg.MaxAttempts, 1)
	prefetch := b.cfg.Prefetch
	if prefetch == 0 {
		prefetch = max(cfg.MaxInFlight, 1)
	}
	s := &subscription{
		b:        b,
		name:     cfg.Name,
		topic:    topic,
		queue:    queueName(topic, cfg.Name),
		limit:    max(b.cfg.DeliveryLimit, maxAttempts),
		prefetch: min(prefetch, 65535),
		in:       make(chan *driver.Message),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
		timers:   map[*time.Timer]struct{}{},
	}
	if len(s.queue) > shortstr {
		return nil, fmt.Errorf("rabbitmq: queue name %.40q... of subscription %q on %q is %d bytes long, above AMQP's limit of %d", s.queue, cfg.Name, topic, len(s.queue), shortstr)
	}
	var ch *amqp.Channel
	var deliveries <-chan amqp.Delivery
	for {
		sess, err := b.session(ctx)
		if err != nil {
			return nil, err
		}
		ch, deliveries, err = s.consume(sess)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var amqpErr *amqp.Error
		if !sess.conn.IsClosed() && errors.As(err, &amqpErr) && amqpErr.Server {
			return nil, err // the broker refused: a queue with other arguments, no permission
		}
		// The connection broke meanwhile: wait for the next one.
		select {
		case <-sess.lost:
		case <-time.After(b.cfg.ReconnectMin):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	b.mu.Lock()
	b.queues[s.queue] = topic
	b.mu.Unlock()
	go s.pump(ch, deliveries)
	return s, nil
}

// subscription consumes from one queue on a channel of its own, opened
// again on every new connection.
type subscription struct {
	b        *Broker
	name     string
	topic    string
	queue    string
	limit    int
	prefetch int
	in       chan *driver.Message // deliveries, handed to Receive
	closing  chan struct{}        // closed by Close
	stopped  chan struct{}        // closed when pump has returned

	recv sync.Mutex // held by Receive: one at a time takes from in

	mu     sync.Mutex
	closed bool
	ch     *amqp.Channel            // the current channel, closed by Close
	timers map[*time.Timer]struct{} // delayed Nacks
}

// delivery is the AckID of a received message.
type delivery struct {
	ch  *amqp.Channel
	tag uint64
}

// consume opens a channel on sess, declares the queue and its binding, and
// starts consuming.
func (s *subscription) consume(sess *session) (*amqp.Channel, <-chan amqp.Delivery, error) {
	fail := func(what string, err error) (*amqp.Channel, <-chan amqp.Delivery, error) {
		return nil, nil, fmt.Errorf("rabbitmq: subscription %s on %s: %s: %w", s.name, s.topic, what, err)
	}
	ch, err := sess.conn.Channel()
	if err != nil {
		return fail("opening a channel", err)
	}
	ok := false
	defer func() {
		if !ok {
			ch.Close()
		}
	}()
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return fail("setting the prefetch", err)
	}
	if _, err := ch.QueueDeclare(s.queue, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:  amqp.QueueTypeQuorum,
		"x-delivery-limit": s.limit,
	}); err != nil {
		return fail(fmt.Sprintf("declaring quorum queue %q with x-delivery-limit %d (an existing queue with other arguments must be deleted, or changed by a policy)", s.queue, s.limit), err)
	}
	if err := ch.QueueBind(s.queue, s.topic, s.b.cfg.Exchange, false, nil); err != nil {
		return fail(fmt.Sprintf("binding queue %q to exchange %q", s.queue, s.b.cfg.Exchange), err)
	}
	deliveries, err := ch.Consume(s.queue, "", false, false, false, false, nil)
	if err != nil {
		return fail(fmt.Sprintf("consuming from queue %q", s.queue), err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, driver.ErrClosed
	}
	s.ch = ch
	s.mu.Unlock()
	ok = true
	return ch, deliveries, nil
}

// pump hands deliveries to Receive, and when the channel closes, waits for
// the connection and consumes again, until Close.
func (s *subscription) pump(ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	defer close(s.stopped)
	for {
		for open := true; open; {
			var d amqp.Delivery
			select {
			case d, open = <-deliveries:
			case <-s.closing:
				return
			}
			if !open {
				break
			}
			select {
			case s.in <- s.convert(ch, d):
			case <-s.closing:
				return
			}
		}
		// The consumer ended: the channel or the connection closed, or the
		// broker cancelled the consumer (its queue was deleted), which
		// leaves the channel open. Its unsettled deliveries go back.
		_ = ch.Close()
		wait := s.b.cfg.ReconnectMin
		for {
			select {
			case <-s.closing:
				return
			default:
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.closing:
				case <-ctx.Done():
				}
				cancel()
			}()
			sess, err := s.b.session(ctx)
			if err == nil {
				ch, deliveries, err = s.consume(sess)
			}
			cancel()
			switch {
			case err == nil:
			case errors.Is(err, driver.ErrClosed), errors.Is(err, context.Canceled):
				return
			default:
				s.b.log.Warn("rabbitmq: resuming a subscription failed", "subscription", s.name, "topic", s.topic, "error", err, "retry_in", wait)
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-s.closing:
					t.Stop()
					return
				}
				wait = min(2*wait, s.b.cfg.ReconnectMax)
				continue
			}
			break
		}
	}
}

// convert turns d into a driver message.
func (s *subscription) convert(ch *amqp.Channel, d amqp.Delivery) *driver.Message {
	m := &driver.Message{ID: d.MessageId, Body: d.Body, Header: make(map[string]string, len(d.Headers)+1), Attempt: 1,
		AckID: &delivery{ch: ch, tag: d.DeliveryTag}}
	if d.Body == nil {
		m.Body = []byte{}
	}
	if n, ok := d.Headers["x-delivery-count"]; ok {
		switch n := n.(type) {
		case int64:
			m.Attempt = int(n) + 1
		case int32:
			m.Attempt = int(n) + 1
		case int:
			m.Attempt = n + 1
		}
	} else if d.Redelivered {
		m.Attempt = 2
	}
	for k, v := range d.Headers {
		switch v := v.(type) {
		case string:
			m.Header[k] = v
		case []byte:
			m.Header[k] = string(v)
		default:
			m.Header[k] = fmt.Sprint(v)
		}
	}
	for _, k := range brokerHeaders {
		delete(m.Header, k)
	}
	if d.ContentType != "" {
		m.Header["content-type"] = d.ContentType
	}
	return m
}

// Receive returns the deliveries that have arrived, waiting for the first.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.recv.Lock()
	defer s.recv.Unlock()
	var out []*driver.Message
	select {
	case m := <-s.in:
		out = append(out, m)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closing:
		return nil, driver.ErrClosed
	case <-s.b.closing:
		return nil, driver.ErrClosed
	}
	for len(out) < max {
		select {
		case m := <-s.in:
			out = append(out, m)
		default:
			return out, nil
		}
	}
	return out, nil
}

func (s *subscription) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.b.isClosed() {
		return driver.ErrClosed
	}
	return nil
}

// settle applies f to m's delivery.
func (s *subscription) settle(m *driver.Message, f func(*amqp.Channel, uint64) error) error {
	d, ok := m.AckID.(*delivery)
	if !ok {
		return fmt.Errorf("rabbitmq: message %q was not received from this driver", m.ID)
	}
	if err := s.check(); err != nil {
		return err
	}
	if err := f(d.ch, d.tag); err != nil {
		if errors.Is(err, amqp.ErrClosed) {
			return fmt.Errorf("rabbitmq: settling message %q of %s: its channel is closed, and the broker delivers it again: %w", m.ID, s.queue, err)
		}
		return fmt.Errorf("rabbitmq: settling message %q of %s: %w", m.ID, s.queue, err)
	}
	return nil
}

func ack(ch *amqp.Channel, tag uint64) error  { return ch.Ack(tag, false) }
func nack(ch *amqp.Channel, tag uint64) error { return ch.Nack(tag, false, true) }

// Ack is basic.ack.
func (s *subscription) Ack(_ context.Context, m *driver.Message) error { return s.settle(m, ack) }

// Nack is basic.nack with requeue, after delay: the delivery is held until
// then.
func (s *subscription) Nack(_ context.Context, m *driver.Message, delay time.Duration) error {
	if delay <= 0 {
		return s.settle(m, nack)
	}
	if _, ok := m.AckID.(*delivery); !ok {
		return fmt.Errorf("rabbitmq: message %q was not received from this driver", m.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.b.isClosed() {
		return driver.ErrClosed
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.mu.Lock()
		_, pending := s.timers[t]
		delete(s.timers, t)
		s.mu.Unlock()
		if pending {
			_ = s.settle(m, nack) // a closed channel hands it back too
		}
	})
	s.timers[t] = struct{}{}
	return nil
}

// Term is basic.ack: events has already dead-lettered the message.
func (s *subscription) Term(_ context.Context, m *driver.Message) error { return s.settle(m, ack) }

func (s *subscription) IsRetryable(err error) bool { return IsRetryable(err) }

// Close stops consuming and closes the channel, which hands every
// unsettled delivery back to the broker, those held for a delayed Nack
// included. It returns nil: a channel that cannot be closed belongs to a
// lost connection, whose deliveries the broker has handed back already.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	ch := s.ch
	s.mu.Unlock()
	<-s.stopped
	if ch != nil {
		// An error means the connection is gone, which hands the
		// deliveries back as well.
		_ = ch.Close()
	}
	return nil
}
