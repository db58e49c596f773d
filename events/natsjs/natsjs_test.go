package natsjs_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// server starts an embedded NATS server for one test and returns its URL.
func server(t *testing.T) string {
	t.Helper()
	b, err := natsjs.New(context.Background(), natsjs.Config{Embedded: natsjs.EmbeddedConfig{Enabled: true}})
	if err != nil {
		t.Fatalf("starting an embedded server: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Conn().ConnectedUrl()
}

func open(t *testing.T, cfg natsjs.Config) *natsjs.Broker {
	t.Helper()
	b, err := natsjs.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func admin(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := l.Addr().String()
	l.Close()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	url := server(t)
	tests := []struct {
		name string
		cfg  natsjs.Config
		want string
	}{
		{"invalid config", natsjs.Config{URL: "http://x"}, "events.nats.url"},
		{"nothing listening", natsjs.Config{URL: "nats://" + free, ConnectTimeout: time.Second}, "connecting to nats://" + free},
		{"missing CA file", natsjs.Config{URL: url, TLSCAFile: missing}, "events.nats.tls_ca_file"},
		{"CA file without certificates", natsjs.Config{URL: url, TLSCAFile: garbage}, "events.nats.tls_ca_file: no certificate"},
		{"missing client certificate", natsjs.Config{URL: url, TLSCertFile: missing, TLSKeyFile: missing}, "events.nats.tls_cert_file"},
		{"bad configured stream", natsjs.Config{URL: url, Streams: []natsjs.StreamConfig{
			{Name: "A", Subjects: []string{"same.>"}}, {Name: "B", Subjects: []string{"same.x"}},
		}}, "events.nats.streams[1] (B)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := natsjs.New(ctx, tt.cfg)
			if err == nil {
				b.Close()
				t.Fatalf("New = nil error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := natsjs.New(ctx, natsjs.Config{URL: "http://x"}); !errors.Is(err, natsjs.ErrInvalidConfig) {
		t.Errorf("New(invalid) = %v, want ErrInvalidConfig", err)
	}
}

func TestStreamsFromConfig(t *testing.T) {
	url := server(t)
	ctx := context.Background()
	b := open(t, natsjs.Config{URL: url, SubjectPrefix: "prod", Streams: []natsjs.StreamConfig{
		{Name: "ORDERS", Subjects: []string{"prod.orders.>"}, MaxAge: time.Hour, Storage: "memory", DuplicateWindow: time.Minute},
	}})
	js := admin(t, url)
	info, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatalf("the configured stream was not created: %v", err)
	}
	if c := info.CachedInfo().Config; c.MaxAge != time.Hour || c.Storage != jetstream.MemoryStorage || c.Duplicates != time.Minute {
		t.Errorf("stream config = max age %v, storage %v, duplicates %v", c.MaxAge, c.Storage, c.Duplicates)
	}
	// A topic under the stream's subjects uses it, and its subscription is
	// a durable consumer there with MaxDeliver one above the attempts.
	if _, err := b.OpenTopic(ctx, "orders.placed"); err != nil {
		t.Fatal(err)
	}
	ds, err := b.OpenSubscription(ctx, "orders.placed", driver.SubscriptionConfig{Name: "billing", MaxAttempts: 4, MaxInFlight: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	ci, err := js.Consumer(ctx, "ORDERS", "billing__orders_placed")
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	c := ci.CachedInfo().Config
	if c.MaxDeliver != 5 || c.FilterSubject != "prod.orders.placed" || c.AckPolicy != jetstream.AckExplicitPolicy || c.Durable == "" {
		t.Errorf("consumer config: MaxDeliver %d, filter %q, ack policy %v, durable %q", c.MaxDeliver, c.FilterSubject, c.AckPolicy, c.Durable)
	}
	names := js.StreamNames(ctx)
	var all []string
	for n := range names.Name() {
		all = append(all, n)
	}
	if len(all) != 1 {
		t.Errorf("streams = %v, want only ORDERS", all)
	}
}

func TestAutoCreateStreams(t *testing.T) {
	url := server(t)
	ctx := context.Background()
	no := false
	b := open(t, natsjs.Config{URL: url, AutoCreateStreams: &no})
	_, err := b.OpenTopic(ctx, "orders.placed")
	if err == nil || !strings.Contains(err.Error(), "auto_create_streams is false") {
		t.Errorf("OpenTopic without a stream = %v, want an error about auto_create_streams", err)
	}
	b2 := open(t, natsjs.Config{URL: url, StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Minute, Replicas: 1}})
	if _, err := b2.OpenTopic(ctx, "orders.placed"); err != nil {
		t.Fatal(err)
	}
	s, err := admin(t, url).Stream(ctx, "orders_placed")
	if err != nil {
		t.Fatalf("no stream was created: %v", err)
	}
	// The duplicate window is cut to the max age, which JetStream requires.
	if c := s.CachedInfo().Config; c.MaxAge != time.Minute || c.Duplicates != time.Minute || len(c.Subjects) != 1 || c.Subjects[0] != "orders.placed" {
		t.Errorf("created stream: max age %v, duplicates %v, subjects %v", c.MaxAge, c.Duplicates, c.Subjects)
	}
	// Opening again, from another connection, finds it.
	if _, err := b.OpenTopic(ctx, "orders.placed"); err != nil {
		t.Errorf("OpenTopic of an existing stream with auto-create off = %v", err)
	}
}

func TestConsumerOverrides(t *testing.T) {
	url := server(t)
	ctx := context.Background()
	b := open(t, natsjs.Config{URL: url, AckWait: 20 * time.Second, MaxAckPending: 50,
		Consumers: map[string]natsjs.ConsumerConfig{"slow": {AckWait: time.Minute, MaxAckPending: 5}}})
	for name, want := range map[string][2]int64{"slow": {int64(time.Minute), 5}, "fast": {int64(20 * time.Second), 50}} {
		ds, err := b.OpenSubscription(ctx, "t", driver.SubscriptionConfig{Name: name, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer ds.Close()
		c, err := admin(t, url).Consumer(ctx, "t", name+"__t")
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.CachedInfo().Config
		if int64(cfg.AckWait) != want[0] || int64(cfg.MaxAckPending) != want[1] || cfg.MaxDeliver != 2 {
			t.Errorf("consumer %s: AckWait %v, MaxAckPending %d, MaxDeliver %d; want %v, %d, 2", name, cfg.AckWait, cfg.MaxAckPending, cfg.MaxDeliver, time.Duration(want[0]), want[1])
		}
	}
}

// TestPublishWindow sends more than the window holds, from many goroutines
// and in one batch, and checks that every message is accepted.
func TestPublishWindow(t *testing.T) {
	url := server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := open(t, natsjs.Config{URL: url, PublishWindow: 4})
	dt, err := b.OpenTopic(ctx, "window")
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*driver.Message, 100)
	for i := range batch {
		batch[i] = &driver.Message{Body: []byte{byte(i)}}
	}
	if err := dt.Send(ctx, batch); err != nil {
		t.Fatalf("Send of a batch 25 times the window: %v", err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := dt.Send(ctx, batch[:10]); err != nil {
				t.Errorf("concurrent Send: %v", err)
			}
		})
	}
	wg.Wait()
	s, err := admin(t, url).Stream(ctx, "window")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 300 {
		t.Errorf("stream holds %d messages, want 300", info.State.Msgs)
	}
}

// TestLeaseKeeping runs a handler for longer than AckWait: the driver keeps
// the message's lease, so it is not delivered a second time meanwhile.
func TestLeaseKeeping(t *testing.T) {
	url := server(t)
	ctx := context.Background()
	b := open(t, natsjs.Config{URL: url, AckWait: 600 * time.Millisecond})
	bus, err := events.NewBus(b)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[*testingv1.Ping](ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	done := make(chan struct{})
	if _, err := topic.Subscribe(ctx, "slow", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		if calls.Add(1) == 1 {
			time.Sleep(2 * time.Second)
			close(done)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{}); err != nil {
		t.Fatal(err)
	}
	<-done
	time.Sleep(300 * time.Millisecond)
	if c := calls.Load(); c != 1 {
		t.Errorf("handler called %d times while it held the message past AckWait, want 1", c)
	}
}

// TestConsumerDeleted stops a subscription whose consumer an operator
// deleted, and says why.
func TestConsumerDeleted(t *testing.T) {
	url := server(t)
	ctx := context.Background()
	b := open(t, natsjs.Config{URL: url})
	bus, err := events.NewBus(b)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[*testingv1.Ping](ctx, bus, events.WithTopicName("gone"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe(ctx, "billing", func(context.Context, *events.Event[*testingv1.Ping]) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := admin(t, url).DeleteConsumer(ctx, "gone", "billing__gone"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the subscription did not notice its consumer was deleted")
	}
	if err := sub.Err(); err == nil || !strings.Contains(err.Error(), "consumer") {
		t.Errorf("Err = %v, want the consumer's deletion", err)
	}
}

// TestEmbeddedStoreSurvivesRestart stops and restarts the embedded server
// on the same store directory: what was published while the subscriber was
// away is still delivered.
func TestEmbeddedStoreSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := natsjs.Config{Embedded: natsjs.EmbeddedConfig{Enabled: true, StoreDir: dir}}
	b, err := natsjs.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := b.OpenSubscription(ctx, "kept", driver.SubscriptionConfig{Name: "s", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	ds.Close()
	dt, err := b.OpenTopic(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if err := dt.Send(ctx, []*driver.Message{{ID: "m1", Body: []byte("survives")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the store directory is gone after Close: %v", err)
	}
	b = open(t, cfg)
	ds, err = b.OpenSubscription(ctx, "kept", driver.SubscriptionConfig{Name: "s", MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ms, err := ds.Receive(rctx, 1)
	if err != nil || string(ms[0].Body) != "survives" || ms[0].ID != "m1" {
		t.Fatalf("Receive after a restart = %v, %v; want m1", ms, err)
	}
}

func TestIsRetryable(t *testing.T) {
	tests := map[error]bool{
		nats.ErrDisconnected:              true,
		nats.ErrTimeout:                   true,
		nats.ErrNoResponders:              true,
		jetstream.ErrAsyncPublishTimeout:  true,
		jetstream.ErrNoStreamResponse:     true,
		&jetstream.APIError{Code: 503}:    true,
		context.DeadlineExceeded:          true,
		nats.ErrConnectionClosed:          false,
		jetstream.ErrStreamNotFound:       false,
		&jetstream.APIError{Code: 400}:    false,
		errors.New("wrong last sequence"): false,
		errors.Join(nats.ErrTimeout, nil): true,
	}
	for err, want := range tests {
		if got := natsjs.IsRetryable(err); got != want {
			t.Errorf("IsRetryable(%v) = %v, want %v", err, got, want)
		}
	}
}

func TestDeliveries(t *testing.T) {
	tests := map[string]int{
		"$JS.ACK.ORDERS.billing.3.1041.12.1700000000000000000.0":                  3,
		"$JS.ACK._.ACCHASH.ORDERS.billing.17.1041.12.1700000000000000000.0.xyz12": 17,
		"$JS.ACK.hub.ACCHASH.ORDERS.billing.1.5.5.1700000000000000000.0":          1,
		"$JS.ACK.ORDERS.billing.x.1.2.3.4":                                        0,
		"_INBOX.abc":                                                              0,
		"$JS.ACK.too.short":                                                       0,
	}
	for reply, want := range tests {
		if got := natsjs.Deliveries(reply); got != want {
			t.Errorf("deliveries(%q) = %d, want %d", reply, got, want)
		}
	}
}

// TestStalledBroker publishes while the broker accepts data and answers
// nothing: Publish gives up with an error after its timeout instead of
// hanging, and once the broker answers again the events flow, none twice.
func TestStalledBroker(t *testing.T) {
	url := server(t)
	proxy := testenv.NewProxy(t, strings.TrimPrefix(url, "nats://"))
	ctx := context.Background()
	b := open(t, natsjs.Config{URL: "nats://" + proxy.Addr(), PublishTimeout: 300 * time.Millisecond, ReconnectWait: 100 * time.Millisecond})
	bus, err := events.NewBus(b, events.WithPublishTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[*testingv1.Ping](ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	if _, err := topic.Subscribe(ctx, "s", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		mu.Lock()
		seen[e.ID]++
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	start := time.Now()
	err = topic.Publish(ctx, &testingv1.Ping{}, events.WithID("during-stall"))
	if err == nil || !strings.Contains(err.Error(), "gave up after 2s") {
		t.Errorf("Publish to a stalled broker = %v, want it to give up after 2s", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Publish to a stalled broker took %v", d)
	}
	proxy.Restore()
	// The producer retries; whichever copy arrives is handled once.
	if err := topic.Publish(ctx, &testingv1.Ping{}, events.WithID("during-stall")); err != nil {
		t.Fatalf("Publish after the broker came back: %v", err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{}, events.WithID("after")); err != nil {
		t.Fatalf("Publish after the broker came back: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if seen["during-stall"] != 1 || seen["after"] != 1 {
		t.Errorf("handled %v, want each ID once", seen)
	}
}
