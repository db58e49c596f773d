package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/loamhq/loam/events/driver"
)

// consumerName is the durable consumer of subscription name on topic.
func consumerName(name, topic string) string {
	r := strings.NewReplacer(".", "_", " ", "_")
	return r.Replace(name) + "__" + r.Replace(topic)
}

// OpenSubscription creates or updates the durable consumer of cfg.Name on
// topic and starts pulling from it.
func (b *Broker) OpenSubscription(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
	subject := b.subject(topic)
	stream, err := b.stream(ctx, subject)
	if err != nil {
		return nil, err
	}
	ackWait, maxAckPending := b.consumerSettings(cfg.Name)
	maxAttempts := cfg.MaxAttempts
	if maxAttempts < 1 {
		maxAttempts = 1
	}
	consumer, err := b.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       consumerName(cfg.Name, topic),
		Description:   fmt.Sprintf("events subscription %s on %s", cfg.Name, topic),
		FilterSubject: subject,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxAttempts + 1,
		MaxAckPending: maxAckPending,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("natsjs: consumer %s on stream %s: %w", consumerName(cfg.Name, topic), stream, err)
	}
	prefetch := min(max(2*cfg.MaxInFlight, 1), maxAckPending, 1000)
	s := &subscription{
		b:        b,
		name:     cfg.Name,
		msgs:     make(chan jetstream.Msg, prefetch),
		closing:  make(chan struct{}),
		held:     map[jetstream.Msg]struct{}{},
		failed:   make(chan struct{}),
		leaseDue: ackWait / 3,
	}
	s.cc, err = consumer.Consume(s.deliver,
		jetstream.PullMaxMessages(prefetch),
		jetstream.ConsumeErrHandler(s.consumeError))
	if err != nil {
		return nil, fmt.Errorf("natsjs: consuming %s: %w", consumerName(cfg.Name, topic), err)
	}
	go s.keepLeases()
	return s, nil
}

type subscription struct {
	b        *Broker
	name     string
	cc       jetstream.ConsumeContext
	msgs     chan jetstream.Msg // delivered by the server, not yet received
	closing  chan struct{}      // closed by Close
	leaseDue time.Duration

	mu     sync.Mutex
	closed bool
	held   map[jetstream.Msg]struct{} // received and not settled
	err    error                      // a consumer failure retrying cannot fix
	failed chan struct{}              // closed when err is set
}

// deliver is the Consume callback: it buffers m for Receive, or hands it
// back once the subscription is closing.
func (s *subscription) deliver(m jetstream.Msg) {
	select {
	case s.msgs <- m:
	case <-s.closing:
		_ = m.Nak()
	}
}

// consumeError records the consumer errors that end consumption; the
// others (missed heartbeats while disconnected) nats.go recovers from.
func (s *subscription) consumeError(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
			close(s.failed)
		}
		s.mu.Unlock()
		return
	}
	s.b.log.Debug("natsjs: consumer error", "subscription", s.name, "error", err)
}

// Receive returns buffered messages, waiting for the first.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var first jetstream.Msg
	select {
	case first = <-s.msgs:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closing:
		return nil, driver.ErrClosed
	case <-s.failed:
		return nil, s.check()
	}
	out := []*driver.Message{s.convert(first)}
	for len(out) < max {
		select {
		case m := <-s.msgs:
			out = append(out, s.convert(m))
		default:
			return out, nil
		}
	}
	return out, nil
}

func (s *subscription) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.b.isClosed():
		return driver.ErrClosed
	case s.err != nil:
		return fmt.Errorf("natsjs: subscription %s: %w", s.name, s.err)
	}
	return nil
}

// convert turns m into a driver message and holds its lease.
func (s *subscription) convert(m jetstream.Msg) *driver.Message {
	dm := &driver.Message{Body: m.Data(), Header: make(map[string]string, len(m.Headers())), Attempt: 1, AckID: m}
	for k, vs := range m.Headers() {
		if len(vs) == 0 {
			continue
		}
		if k == jetstream.MsgIDHeader {
			dm.ID = vs[0]
			continue
		}
		dm.Header[k] = vs[0]
	}
	if md, err := m.Metadata(); err == nil {
		dm.Attempt = int(md.NumDelivered)
	}
	s.mu.Lock()
	s.held[m] = struct{}{}
	s.mu.Unlock()
	return dm
}

// keepLeases tells the server, every third of AckWait, that the held
// messages are still being handled, until Close.
func (s *subscription) keepLeases() {
	t := time.NewTicker(s.leaseDue)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.closing:
			return
		}
		s.mu.Lock()
		held := make([]jetstream.Msg, 0, len(s.held))
		for m := range s.held {
			held = append(held, m)
		}
		s.mu.Unlock()
		for _, m := range held {
			_ = m.InProgress()
		}
	}
}

// settle releases m's lease and applies f to it.
func (s *subscription) settle(dm *driver.Message, f func(jetstream.Msg) error) error {
	m, ok := dm.AckID.(jetstream.Msg)
	if !ok {
		return fmt.Errorf("natsjs: message %q was not received from this driver", dm.ID)
	}
	s.mu.Lock()
	delete(s.held, m)
	s.mu.Unlock()
	if s.b.isClosed() { // after the subscription's Close, the connection still settles
		return driver.ErrClosed
	}
	err := f(m)
	if errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return nil
	}
	return err
}

func (s *subscription) Ack(_ context.Context, m *driver.Message) error {
	return s.settle(m, jetstream.Msg.Ack)
}

func (s *subscription) Nack(_ context.Context, m *driver.Message, delay time.Duration) error {
	return s.settle(m, func(jm jetstream.Msg) error {
		if delay <= 0 {
			return jm.Nak()
		}
		return jm.NakWithDelay(delay)
	})
}

func (s *subscription) Term(_ context.Context, m *driver.Message) error {
	return s.settle(m, jetstream.Msg.Term)
}

func (s *subscription) IsRetryable(err error) bool { return IsRetryable(err) }

// Close stops pulling and hands back what was delivered and not received.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.cc.Drain() // deliver Naks what nats.go had buffered
	select {
	case <-s.cc.Closed():
	case <-time.After(2 * time.Second):
		s.cc.Stop()
	}
	for {
		select {
		case m := <-s.msgs:
			_ = m.Nak()
		default:
			return nil
		}
	}
}
