// Package drivertest is the conformance suite of events drivers. Every
// driver runs it from a short test file:
//
//	func TestConformance(t *testing.T) {
//		drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
//			return &harness{...}, nil
//		})
//	}
//
// The suite drives the driver through package events, so it checks the
// driver and the delivery policy together, as applications see them, and
// also calls the driver directly where the contract of package driver says
// more than events needs. What differs between backends is not a separate
// test but a capability: tests that need a durable or key-ordered backend
// skip on one that reports it lacks that (driver.Capabilities), and the
// test of a connection cut mid-stream skips on a backend without a
// connection (Harness.Disconnect).
//
// Tests run in parallel, each with its own Harness, topic and Bus, and
// bound every wait, so a driver that loses a message fails rather than
// hangs.
package drivertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// Harness gives the suite access to one backend. Each test makes its own.
type Harness interface {
	// MakeBroker returns a new connection to the backend. The test closes
	// it, through the Bus that takes it over.
	MakeBroker(ctx context.Context, t *testing.T) (driver.Broker, error)
	// NewTopicName returns a topic name that no other test, process or run
	// uses, and arranges, with t.Cleanup, for whatever the backend
	// provisions for that topic and for its dead-letter topic (the name
	// followed by ".dlq") to be removed after the test.
	NewTopicName(t *testing.T) string
	// Disconnect cuts the connections of every Broker the harness made, as
	// a broker that goes down does, and refuses new ones until restore is
	// called. ok is false, and nothing is done, when the backend has no
	// connection to cut, as in memory.
	Disconnect(t *testing.T) (restore func(), ok bool)
	// Close releases the harness after the test and its cleanups.
	Close()
}

// HarnessMaker makes the Harness of one test.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// wait bounds every wait of the suite.
const wait = 30 * time.Second

// RunConformanceTests runs the suite against the driver that newHarness
// gives access to.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	tests := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"PublishSubscribe", testPublishSubscribe},
		{"FanOutAndSharing", testFanOutAndSharing},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"NackRedelivers", testNackRedelivers},
		{"DriverNackAndAttempts", testDriverNackAndAttempts},
		{"CloseAndReopen", testCloseAndReopen},
		{"OrderPerKey", testOrderPerKey},
		{"DedupRepublishedID", testDedupRepublishedID},
		{"DeadLetterAfterMaxAttempts", testDeadLetterAfterMaxAttempts},
		{"PermanentError", testPermanentError},
		{"Malformed", testMalformed},
		{"HandlerPanic", testHandlerPanic},
		{"ContextCancellation", testContextCancellation},
		{"CloseSemantics", testCloseSemantics},
		{"GracefulDrain", testGracefulDrain},
		{"ConcurrencyLimit", testConcurrencyLimit},
		{"HeadersAndBinaryRoundTrip", testHeadersAndBinaryRoundTrip},
		{"TraceContinues", testTraceContinues},
		{"ConnectionCutMidStream", testConnectionCutMidStream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			h, err := newHarness(ctx, t)
			if err != nil {
				t.Fatalf("making the harness: %v", err)
			}
			t.Cleanup(h.Close)
			tt.run(t, h)
		})
	}
}

// fixture is one test's Bus over a fresh Broker, and a topic.
type fixture struct {
	t      *testing.T
	h      Harness
	broker driver.Broker
	bus    *events.Bus
	topic  string
}

// setup makes a Broker and a Bus with fast retries; the test's cleanup
// closes the Bus.
func setup(t *testing.T, h Harness, opts ...events.Option) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	topic := h.NewTopicName(t) // before the Bus, so the Bus closes before the topic is removed
	b, err := h.MakeBroker(ctx, t)
	if err != nil {
		t.Fatalf("MakeBroker: %v", err)
	}
	opts = append([]events.Option{
		events.WithSource("/loam/drivertest"),
		events.WithLogger(testLogger(t)),
		events.WithDefaults(events.WithBackoff(10*time.Millisecond, 100*time.Millisecond)),
	}, opts...)
	bus, err := events.NewBus(b, opts...)
	if err != nil {
		t.Fatalf("NewBus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			t.Errorf("Bus.Close: %v", err)
		}
	})
	return &fixture{t: t, h: h, broker: b, bus: bus, topic: topic}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter logs to t until the test ends, and drops later writes.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a write after the test ended
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func orders(t *testing.T, f *fixture, opts ...events.TopicOption) *events.Topic[*testingv1.OrderPlaced] {
	t.Helper()
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctxT(t), f.bus, append([]events.TopicOption{events.WithTopicName(f.topic)}, opts...)...)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	return topic
}

func pings(t *testing.T, f *fixture) *events.Topic[*testingv1.Ping] {
	t.Helper()
	topic, err := events.NewTopic[*testingv1.Ping](ctxT(t), f.bus, events.WithTopicName(f.topic))
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	return topic
}

func subscribe[T proto.Message](t *testing.T, topic *events.Topic[T], name string, h events.Handler[T], opts ...events.SubscribeOption) *events.Subscription {
	t.Helper()
	sub, err := topic.Subscribe(ctxT(t), name, h, opts...)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", name, err)
	}
	return sub
}

// recorder collects what handlers see.
type recorder[T proto.Message] struct {
	mu     sync.Mutex
	events []*events.Event[T]
	calls  map[string]int // by event ID
	change chan struct{}
}

func newRecorder[T proto.Message]() *recorder[T] {
	return &recorder[T]{calls: map[string]int{}, change: make(chan struct{}, 1)}
}

func (r *recorder[T]) add(e *events.Event[T]) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.calls[e.ID]++
	r.mu.Unlock()
	select {
	case r.change <- struct{}{}:
	default:
	}
}

// handler records every event and acknowledges it.
func (r *recorder[T]) handler(_ context.Context, e *events.Event[T]) error {
	r.add(e)
	return nil
}

// distinct is the number of event IDs seen.
func (r *recorder[T]) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recorder[T]) callsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

func (r *recorder[T]) snapshot() []*events.Event[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor waits until cond holds, failing the test after the suite's wait.
func (r *recorder[T]) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-r.change:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("gave up after %v waiting for %s; saw %d distinct events", wait, what, r.distinct())
		}
	}
}

// settle gives a subscription time to do something it must not do, such
// as handle an event twice, before the test checks that it did not.
func settle() { time.Sleep(300 * time.Millisecond) }

func testPublishSubscribe(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := orders(t, f)
	rec := newRecorder[*testingv1.OrderPlaced]()
	subscribe(t, topic, "conformance", rec.handler)
	raw := openRaw(t, f, f.topic, "raw")

	ctx := ctxT(t)
	before := time.Now().Add(-time.Second)
	want := []*testingv1.OrderPlaced{
		{OrderId: "o-1", Seq: 1, AmountCents: 1250},
		{OrderId: "o-2", Seq: 1, AmountCents: 99},
		{OrderId: "o-1", Seq: 2},
	}
	if err := topic.Publish(ctx, want[0], events.WithID("first"), events.WithSubject("orders/o-1"), events.WithExtension("tenant", "acme")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := topic.PublishBatch(ctx, want[1:]); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	rec.waitFor(t, "3 events", func() bool { return rec.distinct() == 3 })

	got := rec.snapshot()
	var data []*testingv1.OrderPlaced
	for _, e := range got {
		data = append(data, e.Data)
		if e.Type != "org.loam.testing.v1.order_placed" || e.Source != "/loam/drivertest" || e.Topic != f.topic || e.Subscription != "conformance" {
			t.Errorf("event %s: Type, Source, Topic, Subscription = %q, %q, %q, %q", e.ID, e.Type, e.Source, e.Topic, e.Subscription)
		}
		if e.Key != e.Data.GetOrderId() {
			t.Errorf("event %s: Key = %q, want the order ID %q", e.ID, e.Key, e.Data.GetOrderId())
		}
		if e.Attempt != 1 {
			t.Errorf("event %s: Attempt = %d, want 1", e.ID, e.Attempt)
		}
		if e.Time.Before(before) || e.Time.After(time.Now()) {
			t.Errorf("event %s: Time = %v, want the time of publishing", e.ID, e.Time)
		}
		if e.ID == "first" {
			if e.Subject != "orders/o-1" || !maps.Equal(e.Extensions, map[string]string{"tenant": "acme"}) {
				t.Errorf("first event: Subject, Extensions = %q, %v; want orders/o-1, map[tenant:acme]", e.Subject, e.Extensions)
			}
		} else if len(e.ID) != 36 {
			t.Errorf("event ID %q is not a UUID", e.ID)
		}
	}
	byKeySeq := func(a, b *testingv1.OrderPlaced) int {
		return cmpOrder(a.GetOrderId(), a.GetSeq(), b.GetOrderId(), b.GetSeq())
	}
	slices.SortFunc(data, byKeySeq)
	slices.SortFunc(want, byKeySeq)
	if diff := cmp.Diff(want, data, protocmp.Transform()); diff != "" {
		t.Errorf("received data mismatch (-want +got):\n%s", diff)
	}

	// What a CloudEvents SDK reads from the broker: binary content mode.
	ms := receiveN(t, raw, 3)
	for _, m := range ms {
		for k, v := range map[string]string{
			"ce-specversion": "1.0",
			"ce-type":        "org.loam.testing.v1.order_placed",
			"ce-source":      "/loam/drivertest",
			"content-type":   "application/protobuf",
			"ce-dataschema":  "https://type.googleapis.com/loam.testing.v1.OrderPlaced",
		} {
			if m.Header[k] != v {
				t.Errorf("message %s: header %s = %q, want %q (headers %v)", m.ID, k, m.Header[k], v, m.Header)
			}
		}
		if m.Header["ce-id"] != m.ID || m.ID == "" {
			t.Errorf("message ID %q, header ce-id %q: want them equal and set", m.ID, m.Header["ce-id"])
		}
		if _, err := time.Parse(time.RFC3339Nano, m.Header["ce-time"]); err != nil {
			t.Errorf("message %s: ce-time %q is not RFC 3339: %v", m.ID, m.Header["ce-time"], err)
		}
		var o testingv1.OrderPlaced
		if err := proto.Unmarshal(m.Body, &o); err != nil {
			t.Errorf("message %s: body is not an OrderPlaced: %v", m.ID, err)
		}
		if m.Header["ce-partitionkey"] != o.GetOrderId() {
			t.Errorf("message %s: ce-partitionkey = %q, want %q", m.ID, m.Header["ce-partitionkey"], o.GetOrderId())
		}
		if m.ID == "first" && (m.Header["ce-subject"] != "orders/o-1" || m.Header["ce-tenant"] != "acme") {
			t.Errorf("first message: ce-subject, ce-tenant = %q, %q", m.Header["ce-subject"], m.Header["ce-tenant"])
		}
		ackRaw(t, raw, m)
	}
}

func cmpOrder(k1 string, s1 int64, k2 string, s2 int64) int {
	if c := strings.Compare(k1, k2); c != 0 {
		return c
	}
	return int(s1 - s2)
}

func testFanOutAndSharing(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	billing, shipping := newRecorder[*testingv1.Ping](), newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "billing", billing.handler)
	subscribe(t, topic, "shipping", shipping.handler)
	subscribe(t, topic, "shipping", shipping.handler) // a second replica shares the name
	const n = 20
	ctx := ctxT(t)
	for i := range n {
		if err := topic.Publish(ctx, &testingv1.Ping{Text: strconv.Itoa(i)}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	billing.waitFor(t, "every event at billing", func() bool { return billing.distinct() == n })
	shipping.waitFor(t, "every event at shipping", func() bool { return shipping.distinct() == n })
	settle()
	for _, e := range shipping.snapshot() {
		if c := shipping.callsOf(e.ID); c != 1 {
			t.Errorf("event %s was handled %d times by the two replicas of shipping, want 1", e.ID, c)
		}
	}
}

func testConcurrentPublishers(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "concurrent", rec.handler, events.WithConcurrency(32))
	const publishers, each = 50, 20
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := topic.Publish(ctx, &testingv1.Ping{Text: fmt.Sprintf("%d-%d", p, i)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "every event", func() bool { return rec.distinct() == publishers*each })
	texts := map[string]bool{}
	for _, e := range rec.snapshot() {
		texts[e.Data.GetText()] = true
	}
	if len(texts) != publishers*each {
		t.Errorf("received %d distinct payloads, want %d", len(texts), publishers*each)
	}
}

func testNackRedelivers(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	var mu sync.Mutex
	var attempts []int
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "retrying", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		mu.Lock()
		attempts = append(attempts, e.Attempt)
		mu.Unlock()
		if e.Attempt < 3 {
			return errors.New("not yet")
		}
		return rec.handler(ctx, e)
	})
	if err := topic.Publish(ctxT(t), &testingv1.Ping{Text: "retry me"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "the third attempt", func() bool { return rec.distinct() == 1 })
	settle()
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]int{1, 2, 3}, attempts); diff != "" {
		t.Errorf("handler attempts mismatch (-want +got):\n%s", diff)
	}
}

// openRaw opens a driver subscription on topic next to the fixture's Bus.
func openRaw(t *testing.T, f *fixture, topic, name string) driver.Subscription {
	t.Helper()
	ds, err := f.broker.OpenSubscription(ctxT(t), topic, driver.SubscriptionConfig{Name: name, MaxAttempts: 10, MaxInFlight: 10})
	if err != nil {
		t.Fatalf("OpenSubscription(%q, %q): %v", topic, name, err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds
}

// receiveN receives exactly n messages from ds.
func receiveN(t *testing.T, ds driver.Subscription, n int) []*driver.Message {
	t.Helper()
	ctx := ctxT(t)
	var out []*driver.Message
	for len(out) < n {
		ms, err := ds.Receive(ctx, n-len(out))
		if err != nil {
			t.Fatalf("Receive after %d of %d messages: %v", len(out), n, err)
		}
		if len(ms) == 0 || len(ms) > n-len(out) {
			t.Fatalf("Receive(max %d) returned %d messages", n-len(out), len(ms))
		}
		out = append(out, ms...)
	}
	return out
}

func ackRaw(t *testing.T, ds driver.Subscription, m *driver.Message) {
	t.Helper()
	if err := ds.Ack(ctxT(t), m); err != nil {
		t.Errorf("Ack(%s): %v", m.ID, err)
	}
}

// expectNothing checks that ds has nothing to deliver for a while.
func expectNothing(t *testing.T, ds driver.Subscription, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ms, err := ds.Receive(ctx, 10)
	if len(ms) > 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Receive on an empty subscription = %d messages, %v; want none, context.DeadlineExceeded", len(ms), err)
	}
}

func rawTopic(t *testing.T, f *fixture, name string) driver.Topic {
	t.Helper()
	dt, err := f.broker.OpenTopic(ctxT(t), name)
	if err != nil {
		t.Fatalf("OpenTopic(%q): %v", name, err)
	}
	t.Cleanup(func() { dt.Close() })
	return dt
}

func testDriverNackAndAttempts(t *testing.T, h Harness) {
	f := setup(t, h)
	ds := openRaw(t, f, f.topic, "raw")
	dt := rawTopic(t, f, f.topic)
	ctx := ctxT(t)
	if err := dt.Send(ctx, []*driver.Message{{ID: "m1", Header: map[string]string{"k": "v"}, Body: []byte("one")}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	for attempt := 1; attempt <= 3; attempt++ {
		start := time.Now()
		m := receiveN(t, ds, 1)[0]
		if m.ID != "m1" || m.Attempt != attempt {
			t.Fatalf("Receive = message %q attempt %d, want m1 attempt %d", m.ID, m.Attempt, attempt)
		}
		if attempt == 3 {
			if waited := time.Since(start); waited < 150*time.Millisecond {
				t.Errorf("a message nacked with a delay of 200ms came back after %v", waited)
			}
			ackRaw(t, ds, m)
			break
		}
		delay := time.Duration(0)
		if attempt == 2 {
			delay = 200 * time.Millisecond
		}
		if err := ds.Nack(ctx, m, delay); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}
	expectNothing(t, ds, 500*time.Millisecond)

	// Term settles for good, like Ack.
	if err := dt.Send(ctx, []*driver.Message{{ID: "m2", Body: []byte("two")}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := ds.Term(ctx, receiveN(t, ds, 1)[0]); err != nil {
		t.Fatalf("Term: %v", err)
	}
	expectNothing(t, ds, 500*time.Millisecond)
}

func testCloseAndReopen(t *testing.T, h Harness) {
	f := setup(t, h)
	if !f.bus.Capabilities().Durable {
		t.Skip("the driver is not durable")
	}
	topic := pings(t, f)
	rec := newRecorder[*testingv1.Ping]()
	release := make(chan struct{})
	heldStarted := make(chan struct{}, 10)
	handler := func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		if e.Data.GetText() == "held" {
			heldStarted <- struct{}{}
			select { // held until the forced close cancels it, the first time
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return rec.handler(ctx, e)
	}
	sub := subscribe(t, topic, "durable", handler)
	ctx := ctxT(t)
	publish := func(texts ...string) {
		t.Helper()
		for _, text := range texts {
			if err := topic.Publish(ctx, &testingv1.Ping{Text: text}); err != nil {
				t.Fatalf("Publish: %v", err)
			}
		}
	}
	publish("a", "b", "held")
	rec.waitFor(t, "a and b", func() bool { return rec.distinct() == 2 })
	select {
	case <-heldStarted:
	case <-time.After(wait):
		t.Fatal("the held event never reached its handler")
	}
	closeCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := sub.Close(closeCtx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a handler that outlives it = %v, want context.DeadlineExceeded", err)
	}
	publish("c", "d")
	close(release)
	subscribe(t, topic, "durable", handler)
	rec.waitFor(t, "every event after reopening", func() bool { return rec.distinct() == 5 })
	var texts []string
	for _, e := range rec.snapshot() {
		texts = append(texts, e.Data.GetText())
	}
	slices.Sort(texts)
	texts = slices.Compact(texts)
	if diff := cmp.Diff([]string{"a", "b", "c", "d", "held"}, texts); diff != "" {
		t.Errorf("events across close and reopen (-want +got):\n%s", diff)
	}
}

func testOrderPerKey(t *testing.T, h Harness) {
	f := setup(t, h)
	if !f.bus.Capabilities().OrderedPerKey {
		t.Skip("the driver does not keep order per key")
	}
	topic := orders(t, f)
	const keys, perKey = 4, 15
	var mu sync.Mutex
	done := map[string][]int64{}
	failed := map[string]bool{}
	rec := newRecorder[*testingv1.OrderPlaced]()
	subscribe(t, topic, "ordered", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		mu.Lock()
		// Every fourth event fails once, so retries must not let later
		// events of its key overtake it.
		if e.Data.GetSeq()%4 == 2 && !failed[e.ID] {
			failed[e.ID] = true
			mu.Unlock()
			return errors.New("fail once")
		}
		done[e.Key] = append(done[e.Key], e.Data.GetSeq())
		mu.Unlock()
		return rec.handler(ctx, e)
	}, events.WithConcurrency(8))
	ctx := ctxT(t)
	for seq := int64(1); seq <= perKey; seq++ {
		for k := range keys {
			if err := topic.Publish(ctx, &testingv1.OrderPlaced{OrderId: fmt.Sprintf("key-%d", k), Seq: seq}); err != nil {
				t.Fatalf("Publish: %v", err)
			}
		}
	}
	rec.waitFor(t, "every event", func() bool { return rec.distinct() == keys*perKey })
	mu.Lock()
	defer mu.Unlock()
	want := make([]int64, perKey)
	for i := range want {
		want[i] = int64(i + 1)
	}
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		if diff := cmp.Diff(want, done[key]); diff != "" {
			t.Errorf("order of key %s (-want +got):\n%s", key, diff)
		}
	}
}

func testDedupRepublishedID(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "dedup", rec.handler)
	ctx := ctxT(t)
	for range 3 {
		if err := topic.Publish(ctx, &testingv1.Ping{Text: "once"}, events.WithID("same-id")); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "after"}, events.WithID("other-id")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "both IDs", func() bool { return rec.distinct() == 2 })
	settle()
	if c := rec.callsOf("same-id"); c != 1 {
		t.Errorf("an ID published 3 times was handled %d times, want 1", c)
	}
}

// deadLetter waits for the one dead letter of topic.
func deadLetter(t *testing.T, ds driver.Subscription) *driver.Message {
	t.Helper()
	m := receiveN(t, ds, 1)[0]
	ackRaw(t, ds, m)
	return m
}

func checkDeadLetter(t *testing.T, f *fixture, m *driver.Message, id, cause, attempts, reason string) {
	t.Helper()
	if m.ID != id || m.Header["ce-id"] != id {
		t.Errorf("dead letter ID, ce-id = %q, %q; want %q", m.ID, m.Header["ce-id"], id)
	}
	for k, v := range map[string]string{
		events.HeaderDeadLetterCause:        cause,
		events.HeaderDeadLetterAttempts:     attempts,
		events.HeaderDeadLetterTopic:        f.topic,
		events.HeaderDeadLetterSubscription: "failing",
	} {
		if m.Header[k] != v {
			t.Errorf("dead letter header %s = %q, want %q", k, m.Header[k], v)
		}
	}
	if !strings.Contains(m.Header[events.HeaderDeadLetterReason], reason) {
		t.Errorf("dead letter reason %q does not contain %q", m.Header[events.HeaderDeadLetterReason], reason)
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Header[events.HeaderDeadLetterTime]); err != nil {
		t.Errorf("dead letter time %q: %v", m.Header[events.HeaderDeadLetterTime], err)
	}
}

func testDeadLetterAfterMaxAttempts(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := orders(t, f)
	dlq := openRaw(t, f, f.topic+".dlq", "inspect")
	var calls atomic.Int32
	subscribe(t, topic, "failing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		calls.Add(1)
		return errors.New("payment service said no")
	}, events.WithMaxAttempts(3))
	sent := &testingv1.OrderPlaced{OrderId: "o-9", Seq: 1, Note: []byte{0xff, 0x00}}
	if err := topic.Publish(ctxT(t), sent, events.WithID("doomed")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	m := deadLetter(t, dlq)
	checkDeadLetter(t, f, m, "doomed", events.CauseMaxAttempts, "3", "payment service said no")
	if m.Header["ce-type"] != "org.loam.testing.v1.order_placed" {
		t.Errorf("dead letter ce-type = %q, want the original's", m.Header["ce-type"])
	}
	var got testingv1.OrderPlaced
	if err := proto.Unmarshal(m.Body, &got); err != nil || !proto.Equal(&got, sent) {
		t.Errorf("dead letter body = %v (%v), want %v", &got, err, sent)
	}
	settle()
	if c := calls.Load(); c != 3 {
		t.Errorf("handler called %d times, want 3", c)
	}
}

func testPermanentError(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := orders(t, f)
	dlq := openRaw(t, f, f.topic+".dlq", "inspect")
	var calls atomic.Int32
	subscribe(t, topic, "failing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		calls.Add(1)
		return fmt.Errorf("checking order: %w", events.Permanent(errors.New("negative amount")))
	}, events.WithMaxAttempts(5))
	if err := topic.Publish(ctxT(t), &testingv1.OrderPlaced{OrderId: "o-1", AmountCents: -5}, events.WithID("invalid")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	checkDeadLetter(t, f, deadLetter(t, dlq), "invalid", events.CausePermanent, "1", "negative amount")
	settle()
	if c := calls.Load(); c != 1 {
		t.Errorf("handler called %d times for a permanent error, want 1", c)
	}
}

func testMalformed(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := orders(t, f)
	dlq := openRaw(t, f, f.topic+".dlq", "inspect")
	rec := newRecorder[*testingv1.OrderPlaced]()
	subscribe(t, topic, "failing", rec.handler)
	dt := rawTopic(t, f, f.topic)
	good := map[string]string{"ce-specversion": "1.0", "ce-source": "/x", "ce-type": "org.loam.testing.v1.order_placed"}
	with := func(kv ...string) map[string]string {
		h := maps.Clone(good)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(h, kv[i])
			} else {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	cases := []struct {
		id     string
		header map[string]string
		body   []byte
		reason string
	}{
		{"no-id", with(), nil, "ce-id is missing"},
		{"wrong-type", with("ce-id", "wrong-type", "ce-type", "org.example.other"), nil, "org.example.other"},
		{"bad-body", with("ce-id", "bad-body"), []byte{0xff, 0xff, 0xff}, "data of org.loam.testing.v1.order_placed"},
		{"bad-version", with("ce-id", "bad-version", "ce-specversion", "0.3"), nil, "ce-specversion"},
	}
	for _, c := range cases {
		if err := dt.Send(ctxT(t), []*driver.Message{{ID: c.id, Header: c.header, Body: c.body}}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	got := map[string]*driver.Message{}
	for _, m := range receiveN(t, dlq, len(cases)) {
		got[m.ID] = m
		ackRaw(t, dlq, m)
	}
	for _, c := range cases {
		m := got[c.id]
		if m == nil {
			t.Errorf("no dead letter for %s", c.id)
			continue
		}
		if m.Header[events.HeaderDeadLetterCause] != events.CauseMalformed || !strings.Contains(m.Header[events.HeaderDeadLetterReason], c.reason) {
			t.Errorf("dead letter of %s: cause %q, reason %q; want %q and a reason containing %q", c.id,
				m.Header[events.HeaderDeadLetterCause], m.Header[events.HeaderDeadLetterReason], events.CauseMalformed, c.reason)
		}
		if !bytes.Equal(m.Body, c.body) {
			t.Errorf("dead letter of %s: body %x, want %x", c.id, m.Body, c.body)
		}
	}
	if n := rec.distinct(); n != 0 {
		t.Errorf("the handler saw %d malformed events, want 0", n)
	}
}

func testHandlerPanic(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "panicky", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		if e.Attempt == 1 {
			panic("handler bug")
		}
		return rec.handler(ctx, e)
	})
	if err := topic.Publish(ctxT(t), &testingv1.Ping{Text: "boom"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "the retry after a panic", func() bool { return rec.distinct() == 1 })
	if a := rec.snapshot()[0].Attempt; a != 2 {
		t.Errorf("event handled at attempt %d, want 2", a)
	}
}

func testContextCancellation(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "ctx", rec.handler)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := topic.Publish(cancelled, &testingv1.Ping{Text: "never"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish(cancelled ctx) = %v, want context.Canceled", err)
	}
	if err := topic.PublishBatch(cancelled, []*testingv1.Ping{{Text: "never"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("PublishBatch(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := events.NewTopic[*testingv1.Ping](cancelled, f.bus, events.WithTopicName(f.topic+".other")); err == nil {
		t.Errorf("NewTopic(cancelled ctx) of a new topic = nil error")
	}
	if err := topic.Publish(ctxT(t), &testingv1.Ping{Text: "sentinel"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "the sentinel", func() bool { return rec.distinct() == 1 })
	settle()
	for _, e := range rec.snapshot() {
		if e.Data.GetText() != "sentinel" {
			t.Errorf("received %q, published with a cancelled context", e.Data.GetText())
		}
	}

	// The driver returns context errors unwrapped.
	ds := openRaw(t, f, f.topic, "raw")
	if _, err := ds.Receive(cancelled, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive(cancelled ctx) = %v, want context.Canceled", err)
	}
	dt := rawTopic(t, f, f.topic)
	if err := dt.Send(cancelled, []*driver.Message{{ID: "x", Body: []byte("x")}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send(cancelled ctx) = %v, want context.Canceled", err)
	}
	start := time.Now()
	expectNothing(t, ds, 300*time.Millisecond)
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("Receive with a 300ms deadline returned after %v", waited)
	}

	// A drain that runs out of time cancels the handler's context.
	sawCancel := make(chan error, 1)
	started := make(chan struct{})
	slow := subscribe(t, topic, "slow", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		close(started)
		<-ctx.Done()
		sawCancel <- ctx.Err()
		return ctx.Err()
	})
	if err := topic.Publish(ctxT(t), &testingv1.Ping{Text: "slow"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	<-started
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelClose()
	if err := slow.Close(closeCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want context.DeadlineExceeded", err)
	}
	select {
	case err := <-sawCancel:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler context ended with %v, want context.Canceled", err)
		}
	case <-time.After(wait):
		t.Fatal("the handler's context was not cancelled")
	}
}

func testCloseSemantics(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	sub := subscribe(t, topic, "closing", newRecorder[*testingv1.Ping]().handler)
	ctx := ctxT(t)

	// Driver: a Receive blocked when its Subscription closes returns.
	ds := openRaw(t, f, f.topic, "raw")
	blocked := make(chan error, 1)
	go func() {
		_, err := ds.Receive(ctx, 1)
		blocked <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := ds.Close(); err != nil {
		t.Errorf("Subscription.Close: %v", err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("blocked Receive after Close = %v, want driver.ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("Receive stayed blocked after Close")
	}
	if _, err := ds.Receive(ctx, 1); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Receive after Close = %v, want driver.ErrClosed", err)
	}
	if err := ds.Close(); err != nil {
		t.Errorf("second Subscription.Close = %v, want nil", err)
	}
	dt := rawTopic(t, f, f.topic)
	if err := dt.Close(); err != nil {
		t.Errorf("Topic.Close: %v", err)
	}
	if err := dt.Send(ctx, []*driver.Message{{ID: "late", Body: []byte("x")}}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Send after Topic.Close = %v, want driver.ErrClosed", err)
	}
	if err := dt.Close(); err != nil {
		t.Errorf("second Topic.Close = %v, want nil", err)
	}

	// Events: everything after Bus.Close is ErrClosed.
	if err := f.bus.Close(ctx); err != nil {
		t.Fatalf("Bus.Close: %v", err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "late"}); !errors.Is(err, events.ErrClosed) {
		t.Errorf("Publish after Bus.Close = %v, want ErrClosed", err)
	}
	if _, err := topic.Subscribe(ctx, "late", newRecorder[*testingv1.Ping]().handler); !errors.Is(err, events.ErrClosed) {
		t.Errorf("Subscribe after Bus.Close = %v, want ErrClosed", err)
	}
	if _, err := events.NewTopic[*testingv1.Ping](ctx, f.bus, events.WithTopicName(f.topic)); !errors.Is(err, events.ErrClosed) {
		t.Errorf("NewTopic after Bus.Close = %v, want ErrClosed", err)
	}
	select {
	case <-sub.Done():
	default:
		t.Error("a subscription is still receiving after Bus.Close")
	}
	if err := sub.Err(); err != nil {
		t.Errorf("Subscription.Err after Bus.Close = %v, want nil", err)
	}
	if err := f.bus.Close(ctx); err != nil {
		t.Errorf("second Bus.Close = %v, want nil", err)
	}
	if _, err := f.broker.OpenTopic(ctx, f.topic); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Broker.OpenTopic after Close = %v, want driver.ErrClosed", err)
	}
}

func testGracefulDrain(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	started := make(chan struct{})
	var finished atomic.Bool
	rec := newRecorder[*testingv1.Ping]()
	handler := func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		if e.Data.GetText() == "slow" && !finished.Load() {
			close(started)
			time.Sleep(300 * time.Millisecond)
			finished.Store(true)
		}
		return rec.handler(ctx, e)
	}
	sub := subscribe(t, topic, "draining", handler)
	if err := topic.Publish(ctxT(t), &testingv1.Ping{Text: "slow"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	<-started
	if err := sub.Close(ctxT(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before the running handler finished")
	}
	if !f.bus.Capabilities().Durable {
		return
	}
	// The drained event was acknowledged: reopening does not bring it back.
	subscribe(t, topic, "draining", handler)
	if err := topic.Publish(ctxT(t), &testingv1.Ping{Text: "next"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "the next event", func() bool { return rec.distinct() == 2 })
	settle()
	for _, e := range rec.snapshot() {
		if c := rec.callsOf(e.ID); c != 1 {
			t.Errorf("event %q handled %d times, want 1", e.Data.GetText(), c)
		}
	}
}

func testConcurrencyLimit(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	const limit, n = 4, 24
	var active, peak atomic.Int32
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "limited", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		now := active.Add(1)
		defer active.Add(-1)
		for {
			p := peak.Load()
			if now <= p || peak.CompareAndSwap(p, now) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		return rec.handler(ctx, e)
	}, events.WithConcurrency(limit))
	msgs := make([]*testingv1.Ping, n)
	for i := range msgs {
		msgs[i] = &testingv1.Ping{Text: strconv.Itoa(i)}
	}
	if err := topic.PublishBatch(ctxT(t), msgs); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	rec.waitFor(t, "every event", func() bool { return rec.distinct() == n })
	if p := peak.Load(); p > limit || p < 2 {
		t.Errorf("at most %d handlers ran at once, want between 2 and the limit %d", p, limit)
	}
}

func testHeadersAndBinaryRoundTrip(t *testing.T, h Harness) {
	f := setup(t, h)
	ds := openRaw(t, f, f.topic, "raw")
	dt := rawTopic(t, f, f.topic)
	sent := []*driver.Message{
		{
			ID:  "binary",
			Key: "k-1",
			Header: map[string]string{
				"ce-id":       "binary",
				"x-custom":    "a value; with = signs, spaces and %41",
				"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
				"Mixed-Case":  "kept",
			},
			Body: []byte{0xff, 0xfe, 0x00, 'a', 0x80, 0xc3, 0x28},
		},
		{ID: "empty", Header: map[string]string{"only": "header"}},
	}
	if err := dt.Send(ctxT(t), sent); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := receiveN(t, ds, len(sent))
	slices.SortFunc(got, func(a, b *driver.Message) int { return strings.Compare(a.ID, b.ID) })
	want := []*driver.Message{sent[0], sent[1]}
	slices.SortFunc(want, func(a, b *driver.Message) int { return strings.Compare(a.ID, b.ID) })
	for i := range want {
		if got[i].ID != want[i].ID || !maps.Equal(got[i].Header, want[i].Header) || !bytes.Equal(got[i].Body, want[i].Body) {
			t.Errorf("received ID %q header %v body %x;\nwant ID %q header %v body %x",
				got[i].ID, got[i].Header, got[i].Body, want[i].ID, want[i].Header, want[i].Body)
		}
		ackRaw(t, ds, got[i])
	}

	// The same through events: bytes that are not UTF-8 in the data, and
	// attributes that need percent-encoding in headers.
	topic := orders(t, f)
	rec := newRecorder[*testingv1.OrderPlaced]()
	subscribe(t, topic, "typed", rec.handler)
	msg := &testingv1.OrderPlaced{OrderId: "ordre-été €", Note: []byte{0x00, 0xff, 0xc0, 0xaf}}
	if err := topic.Publish(ctxT(t), msg, events.WithSubject(`naïve "quoted" 100%`)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, "the event", func() bool { return rec.distinct() == 1 })
	e := rec.snapshot()[0]
	if !proto.Equal(e.Data, msg) || e.Subject != `naïve "quoted" 100%` || e.Key != "ordre-été €" {
		t.Errorf("received %v subject %q key %q; want %v subject %q key %q", e.Data, e.Subject, e.Key, msg, `naïve "quoted" 100%`, "ordre-été €")
	}
	jsonTopic := orders(t, f, events.WithJSON())
	if err := jsonTopic.Publish(ctxT(t), &testingv1.OrderPlaced{OrderId: "json", Note: []byte{0xff}}); err != nil {
		t.Fatalf("Publish JSON: %v", err)
	}
	rec.waitFor(t, "the JSON event", func() bool { return rec.distinct() == 2 })
}

func testTraceContinues(t *testing.T, h Harness) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	f := setup(t, h, events.WithTracerProvider(tp))
	topic := pings(t, f)
	consumerCtx := make(chan trace.SpanContext, 1)
	subscribe(t, topic, "traced", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		consumerCtx <- trace.SpanContextFromContext(ctx)
		return nil
	})
	raw := openRaw(t, f, f.topic, "raw")
	ctx, parent := tp.Tracer("drivertest").Start(ctxT(t), "request")
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "traced"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	parent.End()
	var consumer trace.SpanContext
	select {
	case consumer = <-consumerCtx:
	case <-time.After(wait):
		t.Fatal("the event was not handled")
	}
	if consumer.TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("consumer trace %s, want the producer's %s", consumer.TraceID(), parent.SpanContext().TraceID())
	}
	m := receiveN(t, raw, 1)[0]
	ackRaw(t, raw, m)
	if tp := m.Header["traceparent"]; !strings.Contains(tp, parent.SpanContext().TraceID().String()) {
		t.Errorf("traceparent header %q does not carry trace %s", tp, parent.SpanContext().TraceID())
	}
	deadline := time.Now().Add(wait)
	var send, process sdktrace.ReadOnlySpan
	for time.Now().Before(deadline) && (send == nil || process == nil) {
		for _, s := range spans.Ended() {
			switch s.Name() {
			case "send " + f.topic:
				send = s
			case "process " + f.topic:
				process = s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if send == nil || process == nil {
		t.Fatalf("spans ended: %v; want send and process spans of %s", spanNames(spans.Ended()), f.topic)
	}
	if send.SpanKind() != trace.SpanKindProducer || process.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span kinds %v, %v; want producer, consumer", send.SpanKind(), process.SpanKind())
	}
	if process.Parent().SpanID() != send.SpanContext().SpanID() || process.SpanContext().TraceID() != send.SpanContext().TraceID() {
		t.Errorf("process span's parent is %s in trace %s; want the send span %s in trace %s",
			process.Parent().SpanID(), process.SpanContext().TraceID(), send.SpanContext().SpanID(), send.SpanContext().TraceID())
	}
	if send.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("send span's parent is %s, want the caller's span %s", send.Parent().SpanID(), parent.SpanContext().SpanID())
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	return names
}

func testConnectionCutMidStream(t *testing.T, h Harness) {
	f := setup(t, h)
	topic := pings(t, f)
	rec := newRecorder[*testingv1.Ping]()
	subscribe(t, topic, "resilient", rec.handler)
	const n = 200
	ctx := ctxT(t)
	restored := make(chan struct{})
	for i := range n {
		if i == n/3 {
			// Cut while publishing goes on, and restore a second later.
			restore, ok := h.Disconnect(t)
			if !ok {
				t.Skip("the backend has no connection to cut")
			}
			go func() {
				defer close(restored)
				time.Sleep(time.Second)
				restore()
			}()
		}
		if err := topic.Publish(ctx, &testingv1.Ping{Text: strconv.Itoa(i)}, events.WithID(fmt.Sprintf("cut-%03d", i))); err != nil {
			t.Fatalf("Publish %d of %d across the cut: %v", i, n, err)
		}
	}
	<-restored
	rec.waitFor(t, "every event published across the cut", func() bool { return rec.distinct() == n })
	for i := range n {
		if rec.callsOf(fmt.Sprintf("cut-%03d", i)) == 0 {
			t.Errorf("event %d was lost", i)
		}
	}
}
