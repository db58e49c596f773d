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
	s := &subscription{
		b:        b,
		name:     cfg.Name,
		consumer: consumer,
		batch:    min(max(2*cfg.MaxInFlight, 16), maxAckPending, 1000),
		closing:  make(chan struct{}),
		held:     map[jetstream.Msg]struct{}{},
		leaseDue: ackWait / 3,
	}
	go s.keepLeases()
	return s, nil
}

// fetchWait is how long one pull request waits on the server for messages,
// and so how long a closed subscription's requests outlive it.
const fetchWait = 2 * time.Second

// subscription pulls with one explicit pull request (Fetch) of batch
// messages at a time, sending the next when the last is over. (nats.go's
// Consume keeps its own count of the messages it asked for, and against
// NATS 2.9 servers that count can drift until it stops asking, for the
// length of its heartbeat timeout. And with two requests outstanding, the
// server may fill the later one while the earlier waits to expire.)
type subscription struct {
	b        *Broker
	name     string
	consumer jetstream.Consumer
	batch    int
	closing  chan struct{} // closed by Close
	leaseDue time.Duration

	recv sync.Mutex             // held by Receive: one at a time takes from the request
	cur  jetstream.MessageBatch // the outstanding request

	mu     sync.Mutex
	closed bool
	held   map[jetstream.Msg]struct{} // received and not settled
	err    error                      // a consumer failure retrying cannot fix
}

// Receive returns the messages that have arrived, waiting for the first.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	s.recv.Lock()
	defer s.recv.Unlock()
	var out []*driver.Message
	for len(out) < max {
		if s.cur == nil {
			var err error
			if s.cur, err = s.fetch(); err != nil {
				if len(out) > 0 {
					return out, nil
				}
				return nil, err
			}
		}
		var m jetstream.Msg
		var ok bool
		if len(out) == 0 { // wait for the first
			select {
			case m, ok = <-s.cur.Messages():
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.closing:
				return nil, driver.ErrClosed
			}
		} else {
			select {
			case m, ok = <-s.cur.Messages():
			default:
				return out, nil
			}
		}
		if !ok { // the request is over: send another
			err := s.cur.Error()
			s.cur = nil
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrBadRequest) {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				if len(out) > 0 {
					return out, nil
				}
				return nil, s.check()
			}
			continue
		}
		out = append(out, s.convert(m))
	}
	return out, nil
}

func (s *subscription) fetch() (jetstream.MessageBatch, error) {
	b, err := s.consumer.Fetch(s.batch, jetstream.FetchMaxWait(fetchWait))
	if err != nil {
		if cerr := s.check(); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("natsjs: pulling for subscription %s: %w", s.name, err)
	}
	return b, nil
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
	if n := deliveries(m.Reply()); n > 0 {
		dm.Attempt = n
	}
	s.mu.Lock()
	s.held[m] = struct{}{}
	s.mu.Unlock()
	return dm
}

// deliveries reads how many times the server delivered a message from its
// reply subject, as Msg.Metadata does without allocating:
// $JS.ACK.<stream>.<consumer>.<delivered>... on older servers, and
// $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>... on
// newer ones. It returns 0 when the subject has neither form.
func deliveries(reply string) int {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return 0
	}
	skip := 2 // stream, consumer
	switch tokens := strings.Count(reply, ".") + 1; {
	case tokens >= 11:
		skip = 4 // domain, account hash, stream, consumer
	case tokens != 9:
		return 0
	}
	for range skip {
		_, rest, _ = strings.Cut(rest, ".")
	}
	field, _, _ := strings.Cut(rest, ".")
	n := 0
	for _, c := range []byte(field) {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
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

// Close stops pulling. The server keeps the outstanding request until it
// expires, and may still fill it: such messages are handed back with a
// delay that outlasts the request, so that they go to the next subscriber
// rather than back to a request nobody reads.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.recv.Lock() // Receive has returned, seeing closing
	batch := s.cur
	s.cur = nil
	s.recv.Unlock()
	if batch != nil {
		go func() {
			for m := range batch.Messages() {
				_ = m.NakWithDelay(fetchWait)
			}
		}()
	}
	return nil
}
