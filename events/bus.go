package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/loamhq/loam/events/driver"
)

// Bus publishes and consumes events through one driver. Create one per
// process with NewBus, or from configuration with eventbus.Open, and share
// it: it is safe for concurrent use.
//
// The Bus owns the driver.Broker it is given: Close drains the
// subscriptions, closes the topics and then closes the Broker.
type Bus struct {
	broker driver.Broker
	caps   driver.Capabilities
	o      busOptions
	tel    *instruments

	mu     sync.Mutex
	closed bool
	topics map[string]*sender
	subs   map[*Subscription]struct{}
}

// sender is an open driver topic with its telemetry attributes.
type sender struct {
	name  string
	dt    driver.Topic
	attrs topicAttrs
}

// NewBus returns a Bus over b. It fails only when an option is invalid or a
// metric instrument cannot be created.
func NewBus(b driver.Broker, opts ...Option) (*Bus, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil broker", ErrInvalid)
	}
	o := newBusOptions(opts)
	if o.source == "" {
		return nil, fmt.Errorf("%w: empty source", ErrInvalid)
	}
	p := defaultPolicy()
	for _, opt := range o.defaults {
		opt.applySubscribe(&p)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	tel, err := newInstruments(o)
	if err != nil {
		return nil, fmt.Errorf("events: creating instruments: %w", err)
	}
	caps := b.Capabilities()
	if caps.System == "" {
		caps.System = "unknown"
	}
	return &Bus{broker: b, caps: caps, o: o, tel: tel, topics: map[string]*sender{}, subs: map[*Subscription]struct{}{}}, nil
}

// Capabilities reports what the Bus's driver guarantees.
func (b *Bus) Capabilities() driver.Capabilities { return b.caps }

// Close shuts the Bus down: it closes every open Subscription as
// Subscription.Close does, with ctx bounding the drain of all of them,
// then closes the topics and the driver. Publish and Subscribe return
// ErrClosed afterwards. Close returns ctx.Err() when the drain did not
// finish in time, joined with any error of the driver; calling it again
// returns nil.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()

	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Go(func() { errs[i] = s.Close(ctx) })
	}
	wg.Wait()

	b.mu.Lock()
	for _, t := range b.topics {
		errs = append(errs, t.dt.Close())
	}
	b.topics = nil
	b.mu.Unlock()
	errs = append(errs, b.broker.Close())
	return errors.Join(errs...)
}

// sender returns the open driver topic name, opening it on first use.
func (b *Bus) sender(ctx context.Context, name string) (*sender, error) {
	b.mu.Lock()
	s, ok := b.topics[name]
	closed := b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case ok:
		return s, nil
	}
	dt, err := b.broker.OpenTopic(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("events: opening topic %q: %w", name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		dt.Close()
		return nil, ErrClosed
	}
	if s, ok := b.topics[name]; ok { // opened meanwhile by another caller
		dt.Close()
		return s, nil
	}
	s = &sender{name: name, dt: dt, attrs: newTopicAttrs(b.caps.System, name)}
	b.topics[name] = s
	return s, nil
}

// send publishes ms to s inside a send span, retrying transient errors with
// backoff until ctx is done or the publish timeout passes. A publish of
// the application's (user) fails once Close has begun, and carries the
// span's trace context; a dead letter (not user) may still go out while
// Close drains the subscriptions, and keeps the original's trace context.
func (b *Bus) send(ctx context.Context, s *sender, ms []*driver.Message, user bool) error {
	if user && b.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	start := time.Now()
	ctx, span := b.tel.tracer.Start(ctx, s.attrs.spanName, s.attrs.spanOpts...)
	if span.IsRecording() {
		if len(ms) == 1 {
			span.SetAttributes(semconv.MessagingMessageID(ms[0].ID), semconv.MessagingMessageBodySize(len(ms[0].Body)))
		} else {
			span.SetAttributes(semconv.MessagingBatchMessageCount(len(ms)))
		}
	}
	if user {
		for _, m := range ms {
			b.o.propagator.Inject(ctx, propagation.MapCarrier(m.Header))
		}
	}
	err := b.sendRetrying(ctx, s, ms)
	endSpan(span, err)
	if err != nil {
		b.tel.sent.Add(ctx, int64(len(ms)), withError(s.attrs.kvs, err))
		b.tel.sendDuration.Record(ctx, seconds(start), withError(s.attrs.kvs, err))
		return err
	}
	b.tel.sent.Add(ctx, int64(len(ms)), s.attrs.set)
	b.tel.sendDuration.Record(ctx, seconds(start), s.attrs.set)
	return nil
}

func (b *Bus) sendRetrying(ctx context.Context, s *sender, ms []*driver.Message) error {
	parent := ctx
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > b.o.publishTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.o.publishTimeout)
		defer cancel()
	}
	wait := 10 * time.Millisecond
	for {
		err := s.dt.Send(ctx, ms)
		switch {
		case err == nil:
			return nil
		case parent.Err() != nil:
			return parent.Err()
		case errors.Is(err, ErrClosed):
			return ErrClosed
		case !s.dt.IsRetryable(err):
			return fmt.Errorf("events: publishing to %q: %w", s.name, err)
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if parent.Err() != nil {
				return parent.Err()
			}
			return fmt.Errorf("events: publishing to %q: gave up after %v: %w", s.name, b.o.publishTimeout, err)
		}
		wait = min(2*wait, time.Second)
	}
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// register adds s to the subscriptions that Close drains.
func (b *Bus) register(s *Subscription) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.subs[s] = struct{}{}
	return nil
}

func (b *Bus) unregister(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, s)
}
