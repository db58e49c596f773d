package events_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/proto/loam/options"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newBus(t *testing.T, b driver.Broker, opts ...events.Option) *events.Bus {
	t.Helper()
	bus, err := events.NewBus(b, append([]events.Option{events.WithLogger(quiet),
		events.WithDefaults(events.WithBackoff(time.Millisecond, 5*time.Millisecond))}, opts...)...)
	if err != nil {
		t.Fatalf("NewBus: %v", err)
	}
	t.Cleanup(func() { bus.Close(context.Background()) })
	return bus
}

func pingTopic(t *testing.T, bus *events.Bus) *events.Topic[*testingv1.Ping] {
	t.Helper()
	topic, err := events.NewTopic[*testingv1.Ping](context.Background(), bus)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	return topic
}

// eventually waits up to 5s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errTransient = errors.New("transient")

func TestPublishRetriesTransientErrors(t *testing.T) {
	var ids []string
	var mu sync.Mutex
	fb := &fakeBroker{Broker: memory.New()}
	fb.openTopic = func(ctx context.Context, name string) (driver.Topic, error) {
		return &fakeTopic{
			send: func(ctx context.Context, ms []*driver.Message) error {
				mu.Lock()
				defer mu.Unlock()
				ids = append(ids, ms[0].ID)
				if len(ids) < 3 {
					return errTransient
				}
				return nil
			},
			isRetryable: func(err error) bool { return errors.Is(err, errTransient) },
		}, nil
	}
	topic := pingTopic(t, newBus(t, fb))
	if err := topic.Publish(context.Background(), &testingv1.Ping{}); err != nil {
		t.Fatalf("Publish = %v, want nil after two transient errors", err)
	}
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("Send saw IDs %v, want the same ID three times", ids)
	}
}

func TestPublishErrors(t *testing.T) {
	errBroken := errors.New("stream deleted")
	tests := []struct {
		name      string
		send      func(ctx context.Context, ms []*driver.Message) error
		timeout   time.Duration
		ctx       func() (context.Context, context.CancelFunc)
		wantIs    error
		wantText  string
		wantCalls int32
	}{
		{
			name:   "permanent driver error",
			send:   func(context.Context, []*driver.Message) error { return errBroken },
			wantIs: errBroken, wantText: `publishing to "org.loam.testing.v1.ping"`, wantCalls: 1,
		},
		{
			name:    "transient until the publish timeout",
			send:    func(context.Context, []*driver.Message) error { return errTransient },
			timeout: 50 * time.Millisecond,
			wantIs:  errTransient, wantText: "gave up after 50ms",
		},
		{
			name: "context ends during retries",
			send: func(context.Context, []*driver.Message) error { return errTransient },
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			wantIs: context.DeadlineExceeded,
		},
		{
			name:   "driver closed",
			send:   func(context.Context, []*driver.Message) error { return driver.ErrClosed },
			wantIs: events.ErrClosed, wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			fb := &fakeBroker{Broker: memory.New(), openTopic: func(context.Context, string) (driver.Topic, error) {
				return &fakeTopic{
					send: func(ctx context.Context, ms []*driver.Message) error {
						calls.Add(1)
						return tt.send(ctx, ms)
					},
					isRetryable: func(err error) bool { return errors.Is(err, errTransient) },
				}, nil
			}}
			var opts []events.Option
			if tt.timeout > 0 {
				opts = append(opts, events.WithPublishTimeout(tt.timeout))
			}
			topic := pingTopic(t, newBus(t, fb, opts...))
			ctx, cancel := context.WithCancel(context.Background())
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			err := topic.Publish(ctx, &testingv1.Ping{})
			if !errors.Is(err, tt.wantIs) || !strings.Contains(errText(err), tt.wantText) {
				t.Errorf("Publish = %v, want an error wrapping %v containing %q", err, tt.wantIs, tt.wantText)
			}
			if errors.Is(tt.wantIs, context.DeadlineExceeded) && err != context.DeadlineExceeded {
				t.Errorf("Publish = %#v, want context.DeadlineExceeded unwrapped", err)
			}
			if tt.wantCalls > 0 && calls.Load() != tt.wantCalls {
				t.Errorf("Send called %d times, want %d", calls.Load(), tt.wantCalls)
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestNewTopicErrors(t *testing.T) {
	ctx := context.Background()
	bus := newBus(t, memory.New())
	_, err := events.NewTopic[*testingv1.NotAnEvent](ctx, bus)
	if !errors.Is(err, events.ErrNotEvent) || !errors.Is(err, options.ErrNotDeclared) {
		t.Errorf("NewTopic[NotAnEvent] = %v, want ErrNotEvent and options.ErrNotDeclared", err)
	}
	for _, name := range []string{"has space", "a..b", ".lead", "star.*", "full>"} {
		if _, err := events.NewTopic[*testingv1.Ping](ctx, bus, events.WithTopicName(name)); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("NewTopic(WithTopicName(%q)) = %v, want ErrInvalid", name, err)
		}
	}
	errDown := errors.New("broker down")
	fb := &fakeBroker{Broker: memory.New(), openTopic: func(context.Context, string) (driver.Topic, error) { return nil, errDown }}
	if _, err := events.NewTopic[*testingv1.Ping](ctx, newBus(t, fb)); !errors.Is(err, errDown) {
		t.Errorf("NewTopic with OpenTopic failing = %v, want it wrapped", err)
	}
}

func TestNewBusErrors(t *testing.T) {
	if _, err := events.NewBus(nil); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("NewBus(nil) = %v, want ErrInvalid", err)
	}
	if _, err := events.NewBus(memory.New(), events.WithSource("")); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("NewBus(WithSource(\"\")) = %v, want ErrInvalid", err)
	}
	if _, err := events.NewBus(memory.New(), events.WithDefaults(events.WithConcurrency(0))); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("NewBus(WithDefaults(WithConcurrency(0))) = %v, want ErrInvalid", err)
	}
}

func TestPublishInvalidExtension(t *testing.T) {
	topic := pingTopic(t, newBus(t, memory.New()))
	for _, name := range []string{"Upper", "with-dash", "id", "partitionkey", "waytoolongextensionname", ""} {
		if err := topic.Publish(context.Background(), &testingv1.Ping{}, events.WithExtension(name, "v")); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("Publish(WithExtension(%q)) = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSubscribeErrors(t *testing.T) {
	ctx := context.Background()
	topic := pingTopic(t, newBus(t, memory.New()))
	ok := func(context.Context, *events.Event[*testingv1.Ping]) error { return nil }
	tests := []struct {
		name    string
		sub     string
		handler events.Handler[*testingv1.Ping]
		opts    []events.SubscribeOption
	}{
		{"nil handler", "s", nil, nil},
		{"bad name", "has space", ok, nil},
		{"zero attempts", "s", ok, []events.SubscribeOption{events.WithMaxAttempts(0)}},
		{"zero concurrency", "s", ok, []events.SubscribeOption{events.WithConcurrency(0)}},
		{"inverted backoff", "s", ok, []events.SubscribeOption{events.WithBackoff(time.Second, time.Millisecond)}},
		{"negative timeout", "s", ok, []events.SubscribeOption{events.WithHandlerTimeout(-time.Second)}},
		{"negative dedup window", "s", ok, []events.SubscribeOption{events.WithDedupWindow(-time.Second)}},
		{"bad dead-letter topic", "s", ok, []events.SubscribeOption{events.WithDeadLetterTopic("no spaces allowed")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := topic.Subscribe(ctx, tt.sub, tt.handler, tt.opts...); !errors.Is(err, events.ErrInvalid) {
				t.Errorf("Subscribe = %v, want ErrInvalid", err)
			}
		})
	}
	errDown := errors.New("broker down")
	fb := &fakeBroker{Broker: memory.New(), openSubscription: func(context.Context, string, driver.SubscriptionConfig) (driver.Subscription, error) {
		return nil, errDown
	}}
	if _, err := pingTopic(t, newBus(t, fb)).Subscribe(ctx, "s", ok); !errors.Is(err, errDown) {
		t.Errorf("Subscribe with OpenSubscription failing = %v, want it wrapped", err)
	}
}

func TestSubscriptionConfigReachesTheDriver(t *testing.T) {
	var got driver.SubscriptionConfig
	fb := &fakeBroker{Broker: memory.New()}
	fb.openSubscription = func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
		got = cfg
		return fb.Broker.OpenSubscription(ctx, topic, cfg)
	}
	topic := pingTopic(t, newBus(t, fb, events.WithDefaults(events.WithMaxAttempts(7))))
	if _, err := topic.Subscribe(context.Background(), "billing", func(context.Context, *events.Event[*testingv1.Ping]) error { return nil },
		events.WithConcurrency(3)); err != nil {
		t.Fatal(err)
	}
	if want := (driver.SubscriptionConfig{Name: "billing", MaxAttempts: 7, MaxInFlight: 3}); got != want {
		t.Errorf("OpenSubscription got %+v, want %+v", got, want)
	}
}

func TestSubscriptionStopsOnPermanentReceiveError(t *testing.T) {
	errGone := errors.New("consumer deleted")
	fb := &fakeBroker{Broker: memory.New()}
	fb.openSubscription = func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
		return &fakeSubscription{
			receive:     func(context.Context, int) ([]*driver.Message, error) { return nil, errGone },
			isRetryable: func(error) bool { return false },
		}, nil
	}
	sub, err := pingTopic(t, newBus(t, fb)).Subscribe(context.Background(), "s", func(context.Context, *events.Event[*testingv1.Ping]) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription kept going after a permanent receive error")
	}
	if err := sub.Err(); !errors.Is(err, errGone) {
		t.Errorf("Err = %v, want it to wrap %v", err, errGone)
	}
}

func TestSubscriptionRetriesTransientReceiveErrors(t *testing.T) {
	fb := &fakeBroker{Broker: memory.New()}
	var failures atomic.Int32
	fb.openSubscription = func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
		ds, err := fb.Broker.OpenSubscription(ctx, topic, cfg)
		return &fakeSubscription{
			Subscription: ds,
			receive: func(ctx context.Context, max int) ([]*driver.Message, error) {
				if failures.Add(1) <= 2 {
					return nil, errTransient
				}
				return ds.Receive(ctx, max)
			},
			isRetryable: func(err error) bool { return errors.Is(err, errTransient) },
		}, err
	}
	topic := pingTopic(t, newBus(t, fb))
	var handled atomic.Bool
	sub, err := topic.Subscribe(context.Background(), "s", func(context.Context, *events.Event[*testingv1.Ping]) error {
		handled.Store(true)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(context.Background(), &testingv1.Ping{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the event after two failed receives", handled.Load)
	if err := sub.Err(); err != nil {
		t.Errorf("Err = %v, want nil", err)
	}
}

// flakyDLQ is a memory broker whose dead-letter topics fail until healed,
// counting the failures.
func flakyDLQ(healed *atomic.Bool, failures *atomic.Int32) *fakeBroker {
	fb := &fakeBroker{Broker: memory.New()}
	fb.openTopic = func(ctx context.Context, name string) (driver.Topic, error) {
		dt, err := fb.Broker.OpenTopic(ctx, name)
		if err != nil || !strings.HasSuffix(name, ".dlq") {
			return dt, err
		}
		return &fakeTopic{Topic: dt, send: func(ctx context.Context, ms []*driver.Message) error {
			if !healed.Load() {
				failures.Add(1)
				return errors.New("dead-letter stream unavailable")
			}
			return dt.Send(ctx, ms)
		}}, nil
	}
	return fb
}

func TestDeadLetterFailureKeepsTheEvent(t *testing.T) {
	var healed atomic.Bool
	var failures atomic.Int32
	fb := flakyDLQ(&healed, &failures)
	bus := newBus(t, fb)
	topic := pingTopic(t, bus)
	ctx := context.Background()
	dlq, err := fb.Broker.OpenSubscription(ctx, topic.Name()+".dlq", driver.SubscriptionConfig{Name: "inspect"})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	if _, err := topic.Subscribe(ctx, "s", func(context.Context, *events.Event[*testingv1.Ping]) error {
		calls.Add(1)
		return events.Permanent(errors.New("bad"))
	}, events.WithMaxAttempts(2)); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "keep me"}); err != nil {
		t.Fatal(err)
	}
	// More failures than the broker's delivery limit (3) allows deliveries.
	eventually(t, "dead-lettering to fail a few times", func() bool { return failures.Load() >= 5 })
	healed.Store(true)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ms, err := dlq.Receive(rctx, 1)
	if err != nil {
		t.Fatalf("the event never reached the dead-letter topic: %v", err)
	}
	if ms[0].Header[events.HeaderDeadLetterCause] != events.CausePermanent {
		t.Errorf("dead letter cause = %q, want permanent", ms[0].Header[events.HeaderDeadLetterCause])
	}
	if c := calls.Load(); c != 1 {
		t.Errorf("handler called %d times, want 1: the event is held while dead-lettering retries", c)
	}
}

func TestCloseWhileDeadLetteringFailsHandsTheEventBack(t *testing.T) {
	var healed atomic.Bool
	var failures atomic.Int32
	fb := flakyDLQ(&healed, &failures)
	bus := newBus(t, fb)
	topic := pingTopic(t, bus)
	ctx := context.Background()
	bad := func(context.Context, *events.Event[*testingv1.Ping]) error {
		return events.Permanent(errors.New("bad"))
	}
	sub, err := topic.Subscribe(ctx, "s", bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "dead-lettering to fail", func() bool { return failures.Load() >= 1 })
	if err := sub.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	// The event went back to the broker: a new subscriber dead-letters it
	// once the topic works.
	dlq, err := fb.Broker.OpenSubscription(ctx, topic.Name()+".dlq", driver.SubscriptionConfig{Name: "inspect"})
	if err != nil {
		t.Fatal(err)
	}
	healed.Store(true)
	if _, err := topic.Subscribe(ctx, "s", bad); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := dlq.Receive(rctx, 1); err != nil {
		t.Fatalf("the event was lost: %v", err)
	}
}

func TestDeadLetterDisabled(t *testing.T) {
	fb := &fakeBroker{Broker: memory.New()}
	var opened []string
	var terms atomic.Int32
	fb.openTopic = func(ctx context.Context, name string) (driver.Topic, error) {
		opened = append(opened, name)
		return fb.Broker.OpenTopic(ctx, name)
	}
	fb.openSubscription = func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
		ds, err := fb.Broker.OpenSubscription(ctx, topic, cfg)
		return &fakeSubscription{Subscription: ds, term: func(ctx context.Context, m *driver.Message) error {
			terms.Add(1)
			return ds.Term(ctx, m)
		}}, err
	}
	topic := pingTopic(t, newBus(t, fb))
	if _, err := topic.Subscribe(context.Background(), "s", func(context.Context, *events.Event[*testingv1.Ping]) error {
		return events.Permanent(errors.New("no"))
	}, events.WithDeadLetterTopic("")); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(context.Background(), &testingv1.Ping{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the event settled for good", func() bool { return terms.Load() == 1 })
	if len(opened) != 1 {
		t.Errorf("topics opened = %v, want only the topic itself", opened)
	}
}

func TestHandlerTimeout(t *testing.T) {
	broker := memory.New()
	topic := pingTopic(t, newBus(t, broker))
	ctx := context.Background()
	dlq, _ := broker.OpenSubscription(ctx, topic.Name()+".dlq", driver.SubscriptionConfig{Name: "inspect"})
	if _, err := topic.Subscribe(ctx, "s", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		<-ctx.Done()
		return ctx.Err()
	}, events.WithHandlerTimeout(20*time.Millisecond), events.WithMaxAttempts(2)); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ms, err := dlq.Receive(rctx, 1)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if h := ms[0].Header; h[events.HeaderDeadLetterAttempts] != "2" || !strings.Contains(h[events.HeaderDeadLetterReason], "deadline exceeded") {
		t.Errorf("dead letter attempts %q reason %q; want 2 and a deadline", h[events.HeaderDeadLetterAttempts], h[events.HeaderDeadLetterReason])
	}
}

// stubDeduper answers Claim with state or err, and counts the calls.
type stubDeduper struct {
	state             events.DedupState
	err               error
	done, releases    atomic.Int32
	claimKey          atomic.Value
	claimTTL, windowD atomic.Int64
}

func (d *stubDeduper) Claim(_ context.Context, key string, ttl time.Duration) (events.DedupState, error) {
	d.claimKey.Store(key)
	d.claimTTL.Store(int64(ttl))
	return d.state, d.err
}

func (d *stubDeduper) Done(_ context.Context, _ string, window time.Duration) error {
	d.done.Add(1)
	d.windowD.Store(int64(window))
	return nil
}

func (d *stubDeduper) Release(context.Context, string) error {
	d.releases.Add(1)
	return nil
}

func TestDeduper(t *testing.T) {
	tests := []struct {
		name        string
		dd          *stubDeduper
		maxAttempts int
		wantCalls   int32
		wantSettle  string // how the driver message was settled
	}{
		{"claimed", &stubDeduper{state: events.DedupClaimed}, 5, 1, "ack"},
		{"done before", &stubDeduper{state: events.DedupDone}, 5, 0, "ack"},
		{"in progress elsewhere", &stubDeduper{state: events.DedupInProgress}, 5, 0, "nack"},
		{"in progress, last attempt", &stubDeduper{state: events.DedupInProgress}, 1, 0, "ack"},
		{"store down fails open", &stubDeduper{err: errors.New("redis down")}, 5, 1, "ack"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			settled := make(chan string, 10)
			fb := &fakeBroker{Broker: memory.New()}
			fb.openSubscription = func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
				ds, err := fb.Broker.OpenSubscription(ctx, topic, cfg)
				return &fakeSubscription{
					Subscription: ds,
					ack:          func(context.Context, *driver.Message) error { settled <- "ack"; return nil },
					nack: func(_ context.Context, _ *driver.Message, d time.Duration) error {
						settled <- "nack"
						return nil
					},
					term: func(context.Context, *driver.Message) error { settled <- "term"; return nil },
				}, err
			}
			topic := pingTopic(t, newBus(t, fb, events.WithDeduper(tt.dd)))
			var calls atomic.Int32
			if _, err := topic.Subscribe(context.Background(), "billing", func(context.Context, *events.Event[*testingv1.Ping]) error {
				calls.Add(1)
				return nil
			}, events.WithMaxAttempts(tt.maxAttempts), events.WithDedupWindow(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := topic.Publish(context.Background(), &testingv1.Ping{}, events.WithID("evt-1")); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-settled:
				if got != tt.wantSettle {
					t.Errorf("settled with %s, want %s", got, tt.wantSettle)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the event was never settled")
			}
			if c := calls.Load(); c != tt.wantCalls {
				t.Errorf("handler called %d times, want %d", c, tt.wantCalls)
			}
			if k, _ := tt.dd.claimKey.Load().(string); k != "billing\x00org.loam.testing.v1.ping\x00evt-1" {
				t.Errorf("Claim key = %q, want subscription, topic and ID", k)
			}
			if tt.name == "claimed" && (tt.dd.done.Load() != 1 || time.Duration(tt.dd.windowD.Load()) != time.Hour) {
				t.Errorf("Done called %d times with window %v, want once with 1h", tt.dd.done.Load(), time.Duration(tt.dd.windowD.Load()))
			}
		})
	}
}

func TestRetryGoesBackToTheBrokerWithBackoff(t *testing.T) {
	delays := make(chan time.Duration, 10)
	fb := &fakeBroker{Broker: memory.New()}
	fb.openSubscription = func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
		ds, err := fb.Broker.OpenSubscription(ctx, topic, cfg)
		return &fakeSubscription{Subscription: ds, nack: func(ctx context.Context, m *driver.Message, d time.Duration) error {
			delays <- d
			return ds.Nack(ctx, m, 0)
		}}, err
	}
	topic := pingTopic(t, newBus(t, fb))
	if _, err := topic.Subscribe(context.Background(), "s", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		return errors.New("fail")
	}, events.WithBackoff(100*time.Millisecond, 300*time.Millisecond), events.WithMaxAttempts(4)); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(context.Background(), &testingv1.Ping{}); err != nil {
		t.Fatal(err)
	}
	for i, bounds := range [][2]time.Duration{{50, 100}, {100, 200}, {150, 300}} {
		select {
		case d := <-delays:
			if d < bounds[0]*time.Millisecond || d > bounds[1]*time.Millisecond {
				t.Errorf("retry %d after %v, want between %vms and %vms", i+1, d, bounds[0], bounds[1])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no retry %d", i+1)
		}
	}
}

func TestCloseHandsBackEventsQueuedBehindTheirKey(t *testing.T) {
	ctx := context.Background()
	broker := memory.New()
	bus := newBus(t, broker)
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	var mu sync.Mutex
	var seen []int64
	handler := func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		if e.Data.GetSeq() == 1 {
			started <- struct{}{}
			<-release
		}
		mu.Lock()
		seen = append(seen, e.Data.GetSeq())
		mu.Unlock()
		return nil
	}
	sub, err := topic.Subscribe(ctx, "s", handler)
	if err != nil {
		t.Fatal(err)
	}
	for seq := int64(1); seq <= 3; seq++ {
		if err := topic.Publish(ctx, &testingv1.OrderPlaced{OrderId: "k", Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	time.Sleep(50 * time.Millisecond) // 2 and 3 are received and wait behind 1
	closed := make(chan error)
	go func() { closed <- sub.Close(ctx) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != 1 {
		t.Errorf("handled before Close returned: %v, want only the running event 1", seen)
	}
	mu.Unlock()
	if _, err := topic.Subscribe(ctx, "s", handler); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 and 3 after reopening", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	if seen[1] != 2 || seen[2] != 3 {
		t.Errorf("handled %v, want 1, 2, 3", seen)
	}
}

func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	bus := newBus(t, memory.New(), events.WithMeterProvider(mp))
	topic := pingTopic(t, bus)
	ctx := context.Background()
	var done atomic.Int32
	if _, err := topic.Subscribe(ctx, "billing", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		switch {
		case e.Data.GetText() == "bad":
			done.Add(1)
			return events.Permanent(errors.New("bad"))
		case e.Attempt == 1:
			return errors.New("once")
		}
		done.Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"good", "bad"} {
		if err := topic.Publish(ctx, &testingv1.Ping{Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "good"}, events.WithID("dup")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "three events handled", func() bool { return done.Load() == 3 })
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "good"}, events.WithID("dup")); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"messaging.client.sent.messages":      5, // 4 publishes and 1 dead letter
		"messaging.client.consumed.messages":  6, // good twice, dup twice (once retried), bad, the duplicate
		"loam.events.retries":                 2,
		"loam.events.dead_letters":            1,
		"loam.events.duplicates":              1,
		"messaging.process.duration":          5,
		"messaging.client.operation.duration": 5,
	}
	eventually(t, "the metrics", func() bool {
		got := collect(t, reader)
		for name, n := range want {
			if got[name] != n {
				return false
			}
		}
		return true
	})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "loam.events.dead_letters" {
				continue
			}
			dp := m.Data.(metricdata.Sum[int64]).DataPoints[0]
			if v, _ := dp.Attributes.Value(attribute.Key("loam.events.dead_letter.cause")); v.AsString() != events.CausePermanent {
				t.Errorf("dead letter cause attribute = %q, want permanent", v.AsString())
			}
			if v, _ := dp.Attributes.Value(attribute.Key("messaging.consumer.group.name")); v.AsString() != "billing" {
				t.Errorf("consumer group attribute = %q, want billing", v.AsString())
			}
		}
	}
}

// collect returns the sum of every counter, and the count of every
// histogram, by name.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += int64(dp.Count)
				}
			}
		}
	}
	return out
}
