// Package memory is the in-process events driver: a broker that lives in one
// process's memory, for tests and local runs that need no server.
//
//	bus, err := events.NewBus(memory.New())
//
// It behaves like the networked drivers, as the conformance suite checks:
// each subscription name gets every message sent after it was first
// opened; subscribers with one name share them; a message comes back after
// Nack (after its delay) and when a subscriber closes without settling it;
// messages of one key come in the order sent; a message is delivered at
// most SubscriptionConfig.MaxAttempts+1 times. Messages live as long as the
// Broker, so a subscription closed and reopened on the same Broker misses
// nothing, but nothing survives the process.
//
// Queues are unbounded: a subscription that is not consumed keeps every
// message sent to its topic.
//
// # Concurrency and Close
//
// A Broker and everything it opens are safe for concurrent use. Closing the
// Broker drops every message; Send, Receive and settling then return
// driver.ErrClosed.
package memory

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/loamhq/loam/events/driver"
)

// Broker is an in-process broker. Create it with New.
type Broker struct {
	mu     sync.Mutex
	closed bool
	seq    uint64
	topics map[string]map[string]*group // topic -> subscription name -> group
}

// New returns an empty Broker.
func New() *Broker {
	return &Broker{topics: map[string]map[string]*group{}}
}

// group is the durable state of one subscription name on one topic.
type group struct {
	maxDeliveries int
	ready         []*entry             // by seq
	inflight      map[*entry]*receiver // received and not settled, by holder
	wake          chan struct{}        // closed and replaced when ready grows
}

type entry struct {
	seq      uint64
	msg      driver.Message
	attempts int
}

// receiver is one open Subscription; entries it holds go back to ready
// when it closes.
type receiver struct {
	b      *Broker
	g      *group
	closed bool
	done   chan struct{}
}

// Capabilities reports System "loam.memory", Durable and OrderedPerKey.
func (b *Broker) Capabilities() driver.Capabilities {
	return driver.Capabilities{System: "loam.memory", Durable: true, OrderedPerKey: true}
}

// OpenTopic returns a Topic that sends to name.
func (b *Broker) OpenTopic(ctx context.Context, name string) (driver.Topic, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, driver.ErrClosed
	}
	if b.topics[name] == nil {
		b.topics[name] = map[string]*group{}
	}
	return &topic{b: b, name: name}, nil
}

// OpenSubscription opens, or resumes, the subscription cfg.Name on topic.
func (b *Broker) OpenSubscription(ctx context.Context, topicName string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, driver.ErrClosed
	}
	groups := b.topics[topicName]
	if groups == nil {
		groups = map[string]*group{}
		b.topics[topicName] = groups
	}
	g := groups[cfg.Name]
	if g == nil {
		g = &group{inflight: map[*entry]*receiver{}, wake: make(chan struct{})}
		groups[cfg.Name] = g
	}
	g.maxDeliveries = 0
	if cfg.MaxAttempts > 0 {
		g.maxDeliveries = cfg.MaxAttempts + 1
	}
	return &receiver{b: b, g: g, done: make(chan struct{})}, nil
}

// Close drops every message and makes every Topic and Subscription return
// driver.ErrClosed.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for _, groups := range b.topics {
		for _, g := range groups {
			close(g.wake)
		}
	}
	b.topics = nil
	return nil
}

type topic struct {
	b      *Broker
	name   string
	closed bool
}

// Send appends a copy of each message to every subscription of the topic.
func (t *topic) Send(ctx context.Context, ms []*driver.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.closed || b.closed {
		return driver.ErrClosed
	}
	groups := b.topics[t.name]
	for _, m := range ms {
		b.seq++
		for _, g := range groups {
			e := &entry{seq: b.seq, msg: driver.Message{
				ID: m.ID, Key: m.Key, Header: maps.Clone(m.Header), Body: slices.Clone(m.Body),
			}}
			g.ready = append(g.ready, e)
		}
	}
	for _, g := range groups {
		g.notify()
	}
	return nil
}

// IsRetryable reports false: nothing in memory is transient.
func (t *topic) IsRetryable(error) bool { return false }

func (t *topic) Close() error {
	t.b.mu.Lock()
	defer t.b.mu.Unlock()
	t.closed = true
	return nil
}

// notify wakes the receivers waiting on g. Callers hold the Broker's mu.
func (g *group) notify() {
	close(g.wake)
	g.wake = make(chan struct{})
}

// requeue puts e back in ready, in sequence order. Callers hold mu.
func (g *group) requeue(e *entry) {
	i, _ := slices.BinarySearchFunc(g.ready, e.seq, func(x *entry, seq uint64) int {
		switch {
		case x.seq < seq:
			return -1
		case x.seq > seq:
			return 1
		}
		return 0
	})
	g.ready = slices.Insert(g.ready, i, e)
	g.notify()
}

// Receive returns up to max messages, oldest first, waiting for one.
func (r *receiver) Receive(ctx context.Context, max int) ([]*driver.Message, error) {
	b := r.b
	for {
		b.mu.Lock()
		if r.closed || b.closed {
			b.mu.Unlock()
			return nil, driver.ErrClosed
		}
		g := r.g
		var out []*driver.Message
		for len(g.ready) > 0 && len(out) < max {
			e := g.ready[0]
			g.ready = g.ready[1:]
			if g.maxDeliveries > 0 && e.attempts >= g.maxDeliveries {
				continue // over the delivery limit: dropped, as brokers do
			}
			e.attempts++
			g.inflight[e] = r
			m := e.msg
			m.Header = maps.Clone(e.msg.Header)
			m.Attempt = e.attempts
			m.AckID = e
			out = append(out, &m)
		}
		wake := g.wake
		b.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		select {
		case <-wake:
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// take removes m's entry from the in-flight set when r holds it.
func (r *receiver) take(m *driver.Message) (*entry, error) {
	if r.closed || r.b.closed {
		return nil, driver.ErrClosed
	}
	e, _ := m.AckID.(*entry)
	if e == nil || r.g.inflight[e] != r {
		return nil, nil // settled already, or handed back when a receiver closed
	}
	delete(r.g.inflight, e)
	return e, nil
}

func (r *receiver) Ack(_ context.Context, m *driver.Message) error {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	_, err := r.take(m)
	return err
}

func (r *receiver) Term(ctx context.Context, m *driver.Message) error { return r.Ack(ctx, m) }

func (r *receiver) Nack(_ context.Context, m *driver.Message, delay time.Duration) error {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	e, err := r.take(m)
	if e == nil {
		return err
	}
	if delay <= 0 {
		r.g.requeue(e)
		return nil
	}
	g := r.g
	time.AfterFunc(delay, func() {
		r.b.mu.Lock()
		defer r.b.mu.Unlock()
		if !r.b.closed {
			g.requeue(e)
		}
	})
	return nil
}

func (r *receiver) IsRetryable(error) bool { return false }

// Close hands the messages r holds back to the subscription.
func (r *receiver) Close() error {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	close(r.done)
	if r.b.closed {
		return nil
	}
	for e, holder := range r.g.inflight {
		if holder == r {
			delete(r.g.inflight, e)
			r.g.requeue(e)
		}
	}
	return nil
}
