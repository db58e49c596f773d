package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/rabbitmq"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// broker returns the URL of the machine's RabbitMQ, skipping without one.
func brokerURL(t *testing.T) string {
	t.Helper()
	testenv.RabbitMQConn(t)
	return testenv.RabbitMQ.URL(t)
}

// open connects a Broker for one test, on an exchange of its own that the
// test deletes with the queues the Broker declared.
func open(t *testing.T, cfg rabbitmq.Config) *rabbitmq.Broker {
	t.Helper()
	if cfg.Exchange == "" {
		cfg.Exchange = "loam.test." + strings.ToLower(rand.Text()[:10])
	}
	b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	direct := brokerURL(t)
	t.Cleanup(func() {
		queues := map[string]bool{}
		for q := range rabbitmq.Queues(b) {
			queues[q] = true
		}
		b.Close()
		deleteQueues(t, direct, queues)
		if conn, err := amqp.Dial(direct); err == nil {
			if ch, err := conn.Channel(); err == nil {
				ch.ExchangeDelete(cfg.Exchange, false, false)
			}
			conn.Close()
		}
	})
	return b
}

func topicName() string { return "loam.test." + strings.ToLower(rand.Text()[:12]) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  rabbitmq.Config
		want []string
	}{
		{name: "zero value", cfg: rabbitmq.Config{}},
		{name: "full", cfg: rabbitmq.Config{URL: "amqps://orders@rabbit:5671/prod", Password: config.NewSecret("p"), Exchange: "org.example:events",
			PublishWindow: 10, Prefetch: 20, DeliveryLimit: 10, ReconnectMin: time.Second, ReconnectMax: time.Minute}},
		{
			name: "everything wrong",
			cfg: rabbitmq.Config{URL: "http://user:hunter2@rabbit", Exchange: "amq.topic", PublishWindow: -1, Prefetch: 70000,
				DeliveryLimit: -3, ConnectTimeout: -time.Second, Heartbeat: -time.Second, ReconnectMin: time.Minute, ReconnectMax: time.Second},
			want: []string{
				`events.rabbitmq.url: "http://user:[redacted]@rabbit" is not an amqp:// or amqps:// URL`,
				`events.rabbitmq.exchange: "amq.topic" is not an exchange name`,
				"events.rabbitmq.publish_window: -1 is negative",
				"events.rabbitmq.prefetch: 70000 is above 65535",
				"events.rabbitmq.delivery_limit: -3 is negative",
				"events.rabbitmq.connect_timeout: -1s is negative",
				"events.rabbitmq.heartbeat: -1s is negative",
				"events.rabbitmq.reconnect_max: 1s is below reconnect_min 1m0s",
			},
		},
		{name: "no host", cfg: rabbitmq.Config{URL: "amqp:///vhost"}, want: []string{"events.rabbitmq.url"}},
		{name: "bad exchange", cfg: rabbitmq.Config{Exchange: "has space"}, want: []string{`events.rabbitmq.exchange: "has space"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, rabbitmq.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant a problem containing %q", err, w)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", n, len(tt.want), err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Validate() = %v, shows the password", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := l.Addr().String()
	l.Close()
	good := brokerURL(t)
	u, _ := url.Parse(good)
	u.User = url.UserPassword("guest", "not-the-password")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	fanout := "loam.test." + strings.ToLower(rand.Text()[:10])
	ch, err := testenv.RabbitMQConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(fanout, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.ExchangeDelete(fanout, false, false) })
	tests := []struct {
		name string
		ctx  context.Context
		cfg  rabbitmq.Config
		want string
	}{
		{"invalid config", context.Background(), rabbitmq.Config{URL: "nats://x"}, "events.rabbitmq.url"},
		{"nothing listening", context.Background(), rabbitmq.Config{URL: "amqp://guest:secret@" + free + "/", ConnectTimeout: time.Second},
			"rabbitmq: connecting to amqp://guest:[redacted]@" + free + "/: dial tcp"},
		{"wrong password", context.Background(), rabbitmq.Config{URL: u.String()}, "username or password not allowed"},
		{"wrong secret password", context.Background(), rabbitmq.Config{URL: good, Password: config.NewSecret("not-the-password")}, "username or password not allowed"},
		{"unknown vhost", context.Background(), rabbitmq.Config{URL: strings.TrimSuffix(good, "/") + "/no-such-vhost"}, "no-such-vhost"},
		{"cancelled", cancelled, rabbitmq.Config{URL: good}, "context canceled"},
		{"exchange of another type", context.Background(), rabbitmq.Config{URL: good, Exchange: fanout},
			`declaring exchange "` + fanout + `" (events.rabbitmq.exchange)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := rabbitmq.New(tt.ctx, tt.cfg)
			if err == nil {
				b.Close()
				t.Fatalf("New = nil error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "not-the-password") || strings.Contains(err.Error(), "secret@") {
				t.Errorf("New = %v, shows the password", err)
			}
		})
	}
	if _, err := rabbitmq.New(context.Background(), rabbitmq.Config{URL: "http://x"}); !errors.Is(err, rabbitmq.ErrInvalidConfig) {
		t.Errorf("New(invalid) = %v, want ErrInvalidConfig", err)
	}
}

func TestPasswordFromSecret(t *testing.T) {
	u, _ := url.Parse(brokerURL(t))
	pw, _ := u.User.Password()
	u.User = url.User(u.User.Username())
	b := open(t, rabbitmq.Config{URL: u.String(), Password: config.NewSecret(pw)})
	if _, err := b.OpenTopic(ctxT(t), topicName()); err != nil {
		t.Fatalf("OpenTopic: %v", err)
	}
}

// TestDeliveryLimit checks that the queue's x-delivery-limit stops a
// message that is handed back every time, one delivery after MaxAttempts,
// even if nothing above the driver counts.
func TestDeliveryLimit(t *testing.T) {
	b := open(t, rabbitmq.Config{URL: brokerURL(t)})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "poison", MaxAttempts: 3, MaxInFlight: 1})
	if err != nil {
		t.Fatalf("OpenSubscription: %v", err)
	}
	defer ds.Close()
	dt, _ := b.OpenTopic(ctx, name)
	if err := dt.Send(ctx, []*driver.Message{{ID: "poison", Body: []byte("x")}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var attempts []int
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		ms, err := ds.Receive(rctx, 1)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		attempts = append(attempts, ms[0].Attempt)
		if len(attempts) > 10 {
			t.Fatalf("delivered %d times, attempts %v: the delivery limit does not hold", len(attempts), attempts)
		}
		if err := ds.Nack(ctx, ms[0], 0); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}
	if want := []int{1, 2, 3, 4}; !equal(attempts, want) {
		t.Errorf("attempts of a message handed back every time = %v, want %v (MaxAttempts+1 deliveries)", attempts, want)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestQueueArgumentsConflict checks the error when the queue exists with
// another delivery limit.
func TestQueueArgumentsConflict(t *testing.T) {
	b := open(t, rabbitmq.Config{URL: brokerURL(t)})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "billing", MaxAttempts: 3})
	if err != nil {
		t.Fatalf("OpenSubscription: %v", err)
	}
	ds.Close()
	_, err = b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "billing", MaxAttempts: 7})
	if err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") || !strings.Contains(err.Error(), "x-delivery-limit 7") || !strings.Contains(err.Error(), name+"@billing") {
		t.Errorf("OpenSubscription with another MaxAttempts = %v, want PRECONDITION_FAILED naming the queue", err)
	}
	// The Broker still works.
	ds, err = b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "billing", MaxAttempts: 3})
	if err != nil {
		t.Fatalf("OpenSubscription again: %v", err)
	}
	ds.Close()
}

func TestUnroutable(t *testing.T) {
	url := brokerURL(t)
	ctx := ctxT(t)
	b := open(t, rabbitmq.Config{URL: url})
	dt, err := b.OpenTopic(ctx, topicName())
	if err != nil {
		t.Fatal(err)
	}
	err = dt.Send(ctx, []*driver.Message{{ID: "lost", Body: []byte("x")}, {ID: "lost-too"}})
	if !errors.Is(err, rabbitmq.ErrUnroutable) || dt.IsRetryable(err) {
		t.Errorf("Send to a topic without queues = %v (retryable %v), want ErrUnroutable, not retryable", err, dt.IsRetryable(err))
	}
	// The channel is still fine for a routable message.
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	dt2, _ := b.OpenTopic(ctx, name)
	if err := dt2.Send(ctx, []*driver.Message{{ID: "found"}}); err != nil {
		t.Errorf("Send after an unroutable one: %v", err)
	}

	drop := open(t, rabbitmq.Config{URL: url, DropUnroutable: true})
	dt3, _ := drop.OpenTopic(ctx, topicName())
	if err := dt3.Send(ctx, []*driver.Message{{ID: "dropped"}}); err != nil {
		t.Errorf("Send with DropUnroutable = %v, want nil", err)
	}
}

// TestReconnectWhilePublishing cuts the connection under a publisher and
// a consumer: Send waits for the connection within its context, reports a
// retryable error for what was in flight, and both resume once the broker
// is back, with nothing lost.
func TestReconnectWhilePublishing(t *testing.T) {
	upstream := brokerURL(t)
	u, _ := url.Parse(upstream)
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	b := open(t, rabbitmq.Config{URL: u.String(), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 5, MaxInFlight: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	dt, _ := b.OpenTopic(ctx, name)

	got := map[string]bool{}
	received := make(chan struct{})
	const n = 300
	go func() {
		defer close(received)
		for len(got) < n {
			ms, err := ds.Receive(ctx, 50)
			if err != nil {
				t.Errorf("Receive: %v", err)
				return
			}
			for _, m := range ms {
				got[m.ID] = true
				ds.Ack(ctx, m) // an Ack lost with the channel means a redelivery
			}
		}
	}()
	var retryable int
	for i := range n {
		if i == n/3 {
			proxy.Cut()
			// While the broker is away, Send waits for it until its
			// context ends.
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			err := dt.Send(short, []*driver.Message{{ID: "never"}})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) && !dt.IsRetryable(err) {
				t.Errorf("Send while disconnected = %v, want context.DeadlineExceeded or a retryable error", err)
			}
			go func() {
				time.Sleep(300 * time.Millisecond)
				proxy.Restore()
			}()
		}
		m := []*driver.Message{{ID: fmt.Sprintf("m-%03d", i), Body: []byte{byte(i)}}}
		for {
			err := dt.Send(ctx, m)
			if err == nil {
				break
			}
			if !dt.IsRetryable(err) {
				t.Fatalf("Send %d: %v, not retryable", i, err)
			}
			retryable++
			time.Sleep(10 * time.Millisecond)
		}
	}
	select {
	case <-received:
	case <-time.After(30 * time.Second):
		t.Fatalf("received %d of %d messages after the reconnection", len(got), n)
	}
	t.Logf("%d retryable errors across the cut", retryable)
}

// TestClose checks Close of the Broker: what was blocked returns, what
// comes after fails with driver.ErrClosed, and Close returns promptly even
// while the broker is unreachable.
func TestClose(t *testing.T) {
	upstream := brokerURL(t)
	u, _ := url.Parse(upstream)
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	b := open(t, rabbitmq.Config{URL: u.String(), ReconnectMin: 20 * time.Millisecond})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	dt, _ := b.OpenTopic(ctx, name)
	blocked := make(chan error, 2)
	go func() {
		_, err := ds.Receive(ctx, 1)
		blocked <- err
	}()
	proxy.Cut()
	go func() {
		for { // the first attempt may meet the connection as it breaks
			err := dt.Send(ctx, []*driver.Message{{ID: "waiting"}})
			if !dt.IsRetryable(err) {
				blocked <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close while disconnected took %v", d)
	}
	for range 2 {
		select {
		case err := <-blocked:
			if !errors.Is(err, driver.ErrClosed) {
				t.Errorf("a call blocked at Close returned %v, want driver.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call stayed blocked after Close")
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := b.OpenTopic(ctx, name); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("OpenTopic after Close = %v, want driver.ErrClosed", err)
	}
	if _, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s"}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("OpenSubscription after Close = %v, want driver.ErrClosed", err)
	}
	if err := dt.Send(ctx, []*driver.Message{{ID: "late"}}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Send after Close = %v, want driver.ErrClosed", err)
	}
	if err := ds.Close(); err != nil {
		t.Errorf("Subscription.Close after Broker.Close = %v", err)
	}
	proxy.Restore()
}

// TestOutage checks what waits for the connection while the broker is
// away: opening a subscription waits within its context, and closing one
// does not wait at all.
func TestOutage(t *testing.T) {
	u, _ := url.Parse(brokerURL(t))
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	b := open(t, rabbitmq.Config{URL: u.String(), ReconnectMin: 20 * time.Millisecond})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := b.OpenSubscription(short, name, driver.SubscriptionConfig{Name: "other", MaxAttempts: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("OpenSubscription while the broker is away = %v, want context.DeadlineExceeded", err)
	}
	start := time.Now()
	if err := ds.Close(); err != nil {
		t.Errorf("Subscription.Close while the broker is away = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Subscription.Close while the broker is away took %v", d)
	}
	proxy.Restore()
	ds, err = b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 1})
	if err != nil {
		t.Fatalf("OpenSubscription after the broker is back: %v", err)
	}
	defer ds.Close()
	dt, _ := b.OpenTopic(ctx, name)
	if err := dt.Send(ctx, []*driver.Message{{ID: "back"}}); err != nil {
		t.Fatalf("Send after the broker is back: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ms, err := ds.Receive(rctx, 1)
	if err != nil || ms[0].ID != "back" {
		t.Fatalf("Receive after the broker is back = %v, %v", ms, err)
	}
	if err := ds.Ack(ctx, ms[0]); err != nil {
		t.Errorf("Ack: %v", err)
	}
}

// TestDeadLetterQueue checks that dead letters are kept in the queue of the
// dead-letter topic when nobody subscribes to it, instead of being
// unroutable.
func TestDeadLetterQueue(t *testing.T) {
	direct := brokerURL(t)
	b := open(t, rabbitmq.Config{URL: direct})
	ctx := ctxT(t)
	bus, err := events.NewBus(b, events.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	name := topicName()
	topic, err := events.NewTopic[*testingv1.Ping](ctx, bus, events.WithTopicName(name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topic.Subscribe(ctx, "failing", func(context.Context, *events.Event[*testingv1.Ping]) error {
		return events.Permanent(errors.New("cannot handle this"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "doomed"}, events.WithID("doomed")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	ch, err := testenv.RabbitMQConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, ok, err := ch.Get(name+".dlq", false)
		if err != nil {
			t.Fatalf("reading queue %s.dlq: %v", name, err)
		}
		if ok {
			if d.MessageId != "doomed" || d.Headers[events.HeaderDeadLetterCause] != events.CausePermanent {
				t.Errorf("dead letter: message-id %q, cause %v; want doomed, %s", d.MessageId, d.Headers[events.HeaderDeadLetterCause], events.CausePermanent)
			}
			d.Ack(false)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter in queue %s.dlq after 10s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTooLong checks names and fields beyond AMQP's 255-byte short
// strings: they fail at once, not retryable, and the connection goes on.
func TestTooLong(t *testing.T) {
	b := open(t, rabbitmq.Config{URL: brokerURL(t)})
	ctx := ctxT(t)
	long := strings.Repeat("x", 256)
	if _, err := b.OpenTopic(ctx, long); err == nil || !strings.Contains(err.Error(), "routing key") {
		t.Errorf("OpenTopic(256 bytes) = %v, want an error about the routing key", err)
	}
	name := topicName()
	if _, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: long, MaxAttempts: 1}); err == nil || !strings.Contains(err.Error(), "queue name") {
		t.Errorf("OpenSubscription(name of 256 bytes) = %v, want an error about the queue name", err)
	}
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	dt, _ := b.OpenTopic(ctx, name)
	for _, m := range []*driver.Message{
		{ID: long},
		{ID: "key", Header: map[string]string{long: "v"}},
		{ID: "type", Header: map[string]string{"content-type": long}},
	} {
		if err := dt.Send(ctx, []*driver.Message{m}); err == nil || dt.IsRetryable(err) || !strings.Contains(err.Error(), "limit") {
			t.Errorf("Send(%.10q) = %v (retryable %v), want a permanent error about AMQP's limit", m.ID, err, dt.IsRetryable(err))
		}
	}
	if err := dt.Send(ctx, []*driver.Message{{ID: "fine", Header: map[string]string{"k": long}}}); err != nil {
		t.Fatalf("Send of a long header value = %v, want nil", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ms, err := ds.Receive(rctx, 1)
	if err != nil || ms[0].ID != "fine" || ms[0].Header["k"] != long {
		t.Fatalf("Receive = %v, %v; want message fine with its long header", ms, err)
	}
	ds.Ack(ctx, ms[0])
}

// TestStalledBroker stalls the connection without closing it, as a broker
// that hangs does: the heartbeat notices, the publish in flight fails with a
// retryable error (or its context ends), and the Broker reconnects once
// the broker answers again.
func TestStalledBroker(t *testing.T) {
	u, _ := url.Parse(brokerURL(t))
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	b := open(t, rabbitmq.Config{URL: u.String(), Heartbeat: time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	dt, _ := b.OpenTopic(ctx, name)
	proxy.Stall()
	stalled, cancel := context.WithTimeout(ctx, 6*time.Second)
	defer cancel()
	start := time.Now()
	err = dt.Send(stalled, []*driver.Message{{ID: "stalled"}})
	if err == nil || !(dt.IsRetryable(err) || errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("Send to a stalled broker = %v, want a retryable error", err)
	}
	t.Logf("Send to a stalled broker returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	proxy.Restore()
	for {
		err := dt.Send(ctx, []*driver.Message{{ID: "after"}})
		if err == nil {
			break
		}
		if !dt.IsRetryable(err) {
			t.Fatalf("Send after the stall: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := map[string]bool{}
	for !seen["after"] {
		ms, err := ds.Receive(ctx, 10)
		if err != nil {
			t.Fatalf("Receive after the stall (seen %v): %v", seen, err)
		}
		for _, m := range ms {
			seen[m.ID] = true
			ds.Ack(ctx, m)
		}
	}
}

// TestExchangeDeleted deletes the exchange under a running Broker, as an
// operator might: the publish that meets the missing exchange fails as
// retryable, and the Broker declares the exchange and the subscription's
// binding again, so the next publish is delivered.
func TestExchangeDeleted(t *testing.T) {
	exchange := "loam.test." + strings.ToLower(rand.Text()[:10])
	b := open(t, rabbitmq.Config{URL: brokerURL(t), Exchange: exchange, ReconnectMin: 20 * time.Millisecond})
	ctx := ctxT(t)
	name := topicName()
	ds, err := b.OpenSubscription(ctx, name, driver.SubscriptionConfig{Name: "s", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	dt, _ := b.OpenTopic(ctx, name)
	ch, err := testenv.RabbitMQConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(exchange, false, false); err != nil {
		t.Fatal(err)
	}
	retryable := 0
	for {
		err := dt.Send(ctx, []*driver.Message{{ID: "after"}})
		if err == nil {
			break
		}
		// Until the subscription is bound again, the message may also be
		// unroutable.
		if !dt.IsRetryable(err) && !errors.Is(err, rabbitmq.ErrUnroutable) {
			t.Fatalf("Send after the exchange was deleted: %v", err)
		}
		retryable++
		time.Sleep(20 * time.Millisecond)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ms, err := ds.Receive(rctx, 1)
	if err != nil || ms[0].ID != "after" {
		t.Fatalf("Receive after the exchange came back = %v, %v", ms, err)
	}
	ds.Ack(ctx, ms[0])
	t.Logf("%d failed sends while the exchange was being declared again", retryable)
}
