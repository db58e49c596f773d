package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/loamhq/loam/events/driver"
)

// Subscription is a running subscriber: it receives a topic's events for
// one subscription name and hands them to a Handler under the delivery
// policy. It is safe for concurrent use. Stop it with Close, or by closing
// the Bus.
type Subscription struct {
	bus      *Bus
	topic    string
	name     string
	ds       driver.Subscription
	dlq      *sender // nil when dead-lettering is off
	p        policy
	ordered  bool
	decode   decodeFunc
	attrs    subAttrs
	claimTTL time.Duration

	slots    chan struct{} // one token per event in hand
	recvCtx  context.Context
	stopRecv context.CancelFunc
	workCtx  context.Context // parent of handler contexts; cancelled when the drain runs out
	stopWork context.CancelFunc
	stopping chan struct{} // closed when Close begins
	loopDone chan struct{} // closed when the receive loop returns
	workers  sync.WaitGroup

	mu   sync.Mutex
	keys map[string][]*delivery // events waiting behind the running one of their key

	closeOnce sync.Once
	closeErr  error
	err       error // why the receive loop stopped by itself; set before loopDone closes
}

// decodeFunc checks and decodes a received event, returning what calls the
// handler with an attempt number. Its error wraps ErrMalformed.
type decodeFunc func(m *driver.Message, a *attributes) (func(ctx context.Context, attempt int) error, error)

// delivery is a received message and its attributes.
type delivery struct {
	m   *driver.Message
	a   attributes
	err error // the attributes did not decode
}

// errPanic is wrapped by the error of a handler that panicked.
var errPanic = errors.New("handler panicked")

// subscribe opens a subscription and starts its receive loop.
func (b *Bus) subscribe(ctx context.Context, topic, name string, p policy, ordered bool, decode decodeFunc) (*Subscription, error) {
	s := &Subscription{
		bus: b, topic: topic, name: name, p: p, ordered: ordered, decode: decode,
		attrs:    newSubAttrs(b.caps.System, topic, name),
		claimTTL: 5 * time.Minute,
		slots:    make(chan struct{}, p.concurrency),
		stopping: make(chan struct{}),
		loopDone: make(chan struct{}),
		keys:     map[string][]*delivery{},
	}
	if p.handlerTimeout > 0 {
		s.claimTTL = p.handlerTimeout + time.Minute
	}
	if !p.noDeadLetter {
		dlq, err := b.sender(ctx, p.deadLetter)
		if err != nil {
			return nil, err
		}
		s.dlq = dlq
	}
	ds, err := b.broker.OpenSubscription(ctx, topic, driver.SubscriptionConfig{Name: name, MaxAttempts: p.maxAttempts, MaxInFlight: p.concurrency})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("events: subscribing %q to %q: %w", name, topic, err)
	}
	s.ds = ds
	s.recvCtx, s.stopRecv = context.WithCancel(context.Background())
	s.workCtx, s.stopWork = context.WithCancel(context.Background())
	go s.receive()
	if err := b.register(s); err != nil { // the Bus closed meanwhile
		s.Close(context.Background())
		return nil, err
	}
	return s, nil
}

// Topic returns the name of the subscribed topic.
func (s *Subscription) Topic() string { return s.topic }

// Name returns the subscription name.
func (s *Subscription) Name() string { return s.name }

// Done is closed when the subscription stops receiving: after Close, or
// when the driver failed in a way that retrying cannot fix (see Err).
func (s *Subscription) Done() <-chan struct{} { return s.loopDone }

// Err returns why the subscription stopped receiving by itself, such as
// its consumer having been deleted on the broker, once Done is closed; nil
// while it runs, and when Close stopped it.
func (s *Subscription) Err() error {
	select {
	case <-s.loopDone:
		return s.err
	default:
		return nil
	}
}

// Close stops the subscription gracefully. It stops receiving, hands the
// events that wait behind a running one of their key back to the broker,
// and waits for the running handlers, which see their retries end early,
// to finish and settle their events. If ctx ends first, Close cancels the
// handlers' contexts, closes the driver subscription without waiting
// further and returns ctx.Err(); the events of the handlers still running
// are delivered again later. Calling Close again returns the first result.
func (s *Subscription) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		close(s.stopping)
		s.stopRecv()
		<-s.loopDone
		drained := make(chan struct{})
		go func() {
			s.workers.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-ctx.Done():
			s.stopWork()
			s.closeErr = ctx.Err()
		}
		s.stopWork()
		s.closeErr = errors.Join(s.closeErr, s.ds.Close())
		s.bus.unregister(s)
	})
	return s.closeErr
}

// receive takes events from the driver as slots free up, until Close or a
// permanent driver error.
func (s *Subscription) receive() {
	defer close(s.loopDone)
	wait := 100 * time.Millisecond
	for {
		select { // one free slot at least
		case s.slots <- struct{}{}:
		case <-s.recvCtx.Done():
			return
		}
		n := 1
	fill:
		for n < cap(s.slots) {
			select {
			case s.slots <- struct{}{}:
				n++
			default:
				break fill
			}
		}
		ms, err := s.ds.Receive(s.recvCtx, n)
		for range n - len(ms) {
			<-s.slots
		}
		if err != nil {
			if s.recvCtx.Err() != nil {
				return
			}
			if errors.Is(err, ErrClosed) || !s.ds.IsRetryable(err) {
				s.err = fmt.Errorf("events: receiving %q on %q: %w", s.name, s.topic, err)
				s.bus.o.logger.Error("events: subscription stopped", "topic", s.topic, "subscription", s.name, "error", err)
				return
			}
			s.bus.o.logger.Warn("events: receive failed; retrying", "topic", s.topic, "subscription", s.name, "error", err, "retry_in", wait)
			if !sleep(s.recvCtx, wait/2+rand.N(wait/2+1)) {
				return
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		if len(ms) > 0 {
			s.bus.tel.consumed.Add(s.recvCtx, int64(len(ms)), s.attrs.receive)
		}
		for _, m := range ms {
			s.dispatch(m)
		}
	}
}

// dispatch starts handling m, which holds a slot, or queues it behind the
// running event of its key.
func (s *Subscription) dispatch(m *driver.Message) {
	d := &delivery{m: m}
	d.a, d.err = decodeAttributes(m.Header)
	if s.ordered && d.err == nil && d.a.key != "" {
		s.mu.Lock()
		if q, busy := s.keys[d.a.key]; busy {
			s.keys[d.a.key] = append(q, d)
			s.mu.Unlock()
			return
		}
		s.keys[d.a.key] = nil
		s.mu.Unlock()
	}
	s.workers.Add(1)
	go s.work(d)
}

// work handles d and then, for an ordered key, the events queued behind it.
func (s *Subscription) work(d *delivery) {
	defer s.workers.Done()
	for d != nil {
		s.handle(d)
		<-s.slots
		d = s.next(d)
	}
}

// next returns the event queued behind d's key, or nil. Once Close has
// begun, it hands the queued events back to the broker instead.
func (s *Subscription) next(d *delivery) *delivery {
	if !s.ordered || d.err != nil || d.a.key == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.keys[d.a.key]
	if len(q) == 0 {
		delete(s.keys, d.a.key)
		return nil
	}
	select {
	case <-s.stopping:
		delete(s.keys, d.a.key)
		for _, w := range q {
			s.settle(w, s.ds.Nack(context.Background(), w.m, 0))
			<-s.slots
		}
		return nil
	default:
	}
	s.keys[d.a.key] = q[1:]
	return q[0]
}

// handle applies the delivery policy to one event: deduplication, the
// handler, retries, dead-lettering, and settling with the driver.
func (s *Subscription) handle(d *delivery) {
	m := d.m
	attempt := max(m.Attempt, 1)
	ctx := s.bus.o.propagator.Extract(s.workCtx, propagation.MapCarrier(m.Header))
	if d.err != nil {
		s.deadLetter(ctx, d, CauseMalformed, d.err, attempt)
		return
	}
	run, err := s.decode(m, &d.a)
	if err != nil {
		s.deadLetter(ctx, d, CauseMalformed, err, attempt)
		return
	}
	if attempt > s.p.maxAttempts {
		// Earlier deliveries ended without a result, as when the process
		// died while handling it.
		s.deadLetter(ctx, d, CauseMaxAttempts, fmt.Errorf("delivered %d times without a handler result", attempt-1), attempt)
		return
	}
	key, claimed := s.claim(ctx, d, attempt)
	if key == "" && !claimed {
		return // settled as a duplicate, or handed back
	}
	for {
		err := s.call(ctx, run, d, attempt)
		switch {
		case err == nil:
			s.dedupDone(ctx, key)
			s.settle(d, s.ds.Ack(context.Background(), m))
			return
		case s.workCtx.Err() != nil:
			// The drain ran out of time and cancelled the handler: not the
			// event's fault, so hand it back without counting a failure.
			s.dedupRelease(key)
			s.settle(d, s.ds.Nack(context.Background(), m, 0))
			return
		case IsPermanent(err), attempt >= s.p.maxAttempts:
			cause := CauseMaxAttempts
			if IsPermanent(err) {
				cause = CausePermanent
			}
			if s.deadLetter(ctx, d, cause, err, attempt) {
				s.dedupDone(ctx, key)
			} else {
				s.dedupRelease(key)
			}
			return
		}
		s.bus.tel.retries.Add(ctx, 1, s.attrs.process)
		delay := backoff(s.p, attempt)
		if !s.ordered || d.a.key == "" {
			s.dedupRelease(key)
			s.settle(d, s.ds.Nack(context.Background(), m, delay))
			return
		}
		// Ordered: later events of the key wait, so retry here.
		select {
		case <-s.stopping:
			s.dedupRelease(key)
			s.settle(d, s.ds.Nack(context.Background(), m, delay))
			return
		case <-time.After(delay):
		}
		attempt++
	}
}

// call runs the handler once, in a process span, recovering a panic.
func (s *Subscription) call(ctx context.Context, run func(context.Context, int) error, d *delivery, attempt int) (err error) {
	ctx, span := s.bus.tel.tracer.Start(ctx, s.attrs.spanName, s.attrs.spanOpts...)
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingMessageID(d.a.id),
			semconv.MessagingMessageBodySize(len(d.m.Body)),
			semconv.CloudEventsEventID(d.a.id),
			semconv.CloudEventsEventSource(d.a.source),
			semconv.CloudEventsEventType(d.a.typ),
			attrAttempt.Int(attempt),
		)
	}
	if s.p.handlerTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.p.handlerTimeout)
		defer cancel()
	}
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("events: %w: %v", errPanic, r)
			s.bus.o.logger.Error("events: handler panicked", "topic", s.topic, "subscription", s.name,
				"event_id", d.a.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		if err != nil {
			s.bus.tel.processDuration.Record(ctx, seconds(start), withError(s.attrs.kvs, err))
		} else {
			s.bus.tel.processDuration.Record(ctx, seconds(start), s.attrs.process)
		}
		endSpan(span, err)
	}()
	return run(ctx, attempt)
}

// claim takes the deduplication claim on d. It returns the key to pass to
// dedupDone or dedupRelease ("" when deduplication is off or failed open)
// and false when d was settled here instead: a duplicate of an event done,
// or of one in progress elsewhere.
func (s *Subscription) claim(ctx context.Context, d *delivery, attempt int) (string, bool) {
	dd := s.bus.o.deduper
	if dd == nil || s.p.dedupWindow == 0 {
		return "", true
	}
	key := s.name + "\x00" + s.topic + "\x00" + d.a.id
	state, err := dd.Claim(ctx, key, s.claimTTL)
	switch {
	case err != nil:
		s.bus.o.logger.Warn("events: deduplication unavailable; handling the event anyway",
			"topic", s.topic, "subscription", s.name, "event_id", d.a.id, "error", err)
		return "", true
	case state == DedupClaimed:
		return key, true
	case state == DedupDone:
		s.bus.tel.duplicates.Add(ctx, 1, s.attrs.process)
		s.settle(d, s.ds.Ack(context.Background(), d.m))
		return "", false
	}
	// In progress elsewhere: that delivery will settle the event. Try again
	// later, unless this copy is out of attempts, which only a duplicate
	// publication gets to.
	if attempt >= s.p.maxAttempts {
		s.bus.tel.duplicates.Add(ctx, 1, s.attrs.process)
		s.settle(d, s.ds.Ack(context.Background(), d.m))
		return "", false
	}
	s.settle(d, s.ds.Nack(context.Background(), d.m, backoff(s.p, attempt)))
	return "", false
}

func (s *Subscription) dedupDone(ctx context.Context, key string) {
	if key == "" {
		return
	}
	if err := s.bus.o.deduper.Done(ctx, key, s.p.dedupWindow); err != nil {
		s.bus.o.logger.Warn("events: recording a processed event failed", "topic", s.topic, "subscription", s.name, "error", err)
	}
}

func (s *Subscription) dedupRelease(key string) {
	if key == "" {
		return
	}
	if err := s.bus.o.deduper.Release(context.Background(), key); err != nil {
		s.bus.o.logger.Warn("events: releasing a deduplication claim failed", "topic", s.topic, "subscription", s.name, "error", err)
	}
}

// deadLetter publishes a copy of d to the dead-letter topic, with the
// reason in headers, and settles d for good. When the copy cannot be
// published, it tries again with backoff, holding d, for as long as the
// subscription runs; if Close comes first, d goes back to the broker. So
// nothing is dropped, and the broker's delivery limit is not used up
// meanwhile. It reports whether d was settled for good.
func (s *Subscription) deadLetter(ctx context.Context, d *delivery, cause string, reason error, attempt int) bool {
	id := d.a.id
	if id == "" {
		id = d.m.ID
	}
	log := s.bus.o.logger.With("topic", s.topic, "subscription", s.name, "event_id", id,
		"cause", cause, "attempts", attempt, "reason", reason.Error())
	if s.dlq != nil {
		h := maps.Clone(d.m.Header)
		if h == nil {
			h = map[string]string{}
		}
		h[HeaderDeadLetterReason] = reason.Error()
		h[HeaderDeadLetterCause] = cause
		h[HeaderDeadLetterAttempts] = strconv.Itoa(attempt)
		h[HeaderDeadLetterTopic] = s.topic
		h[HeaderDeadLetterSubscription] = s.name
		h[HeaderDeadLetterTime] = time.Now().UTC().Format(time.RFC3339Nano)
		dm := &driver.Message{ID: id, Key: d.a.key, Header: h, Body: d.m.Body}
		for try := 1; ; try++ {
			err := s.bus.send(context.WithoutCancel(ctx), s.dlq, []*driver.Message{dm}, false)
			if err == nil {
				break
			}
			wait := backoff(s.p, try)
			log.Error("events: dead-lettering failed; trying again", "dead_letter_topic", s.dlq.name, "error", err, "retry_in", wait)
			select {
			case <-s.stopping:
				s.settle(d, s.ds.Nack(context.Background(), d.m, 0))
				return false
			case <-time.After(wait):
			}
		}
		log = log.With("dead_letter_topic", s.dlq.name)
	}
	s.bus.tel.deadLetters.Add(ctx, 1, s.attrs.deadLetters[cause])
	log.Warn("events: event dead-lettered")
	s.settle(d, s.ds.Term(context.Background(), d.m))
	return true
}

// settle logs a failed Ack, Nack or Term. The broker then delivers the
// event again, so nothing else is needed.
func (s *Subscription) settle(d *delivery, err error) {
	if errors.Is(err, ErrClosed) && s.closing() {
		return // the drain ran out of time; expected, and said by Close
	}
	if err != nil {
		s.bus.o.logger.LogAttrs(context.Background(), slog.LevelWarn, "events: settling an event failed; the broker will deliver it again",
			slog.String("topic", s.topic), slog.String("subscription", s.name), slog.String("event_id", d.a.id), slog.Any("error", err))
	}
}

func (s *Subscription) closing() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// backoff is the delay before retry number attempt (the first retry follows
// attempt 1): the initial backoff doubled for each attempt before, capped,
// with half of it random ("equal jitter"), so that events that failed
// together do not retry together.
func backoff(p policy, attempt int) time.Duration {
	d := p.maxBackoff
	if attempt < 32 {
		if x := p.initialBackoff << (attempt - 1); x > 0 && x < d {
			d = x
		}
	}
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
