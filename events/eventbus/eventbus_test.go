package eventbus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/eventbus"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/events/rabbitmq"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  eventbus.Config
		want []string // each a problem's text, naming its key
	}{
		{name: "zero value", cfg: eventbus.Config{}},
		{name: "memory", cfg: eventbus.Config{Driver: "memory", Source: "//captures"}},
		{name: "nats", cfg: eventbus.Config{Driver: "nats", NATS: natsjs.Config{URL: "nats://a:4222,nats://b:4222"}}},
		{name: "unknown driver", cfg: eventbus.Config{Driver: "kafka"}, want: []string{`events.driver: "kafka" is not memory, nats or rabbitmq`}},
		{name: "rabbitmq", cfg: eventbus.Config{Driver: "rabbitmq", RabbitMQ: rabbitmq.Config{URL: "amqps://orders@rabbit:5671/prod", Password: config.NewSecret("p")}}},
		{
			name: "bad rabbitmq settings",
			cfg: eventbus.Config{Driver: "rabbitmq", RabbitMQ: rabbitmq.Config{URL: "nats://rabbit:5672", PublishWindow: -1,
				ReconnectMin: time.Minute, ReconnectMax: time.Second}},
			want: []string{
				`events.rabbitmq.url: "nats://rabbit:5672" is not an amqp:// or amqps:// URL`,
				"events.rabbitmq.publish_window: -1 is negative",
				"events.rabbitmq.reconnect_max: 1s is below reconnect_min 1m0s",
			},
		},
		{name: "rabbitmq settings ignored by nats", cfg: eventbus.Config{Driver: "nats", RabbitMQ: rabbitmq.Config{URL: "http://x"}}},
		{name: "dedup in redis", cfg: eventbus.Config{Dedup: eventbus.Dedup{Store: "redis"}}},
		{name: "unknown dedup store", cfg: eventbus.Config{Dedup: eventbus.Dedup{Store: "etcd"}}, want: []string{`events.dedup.store: "etcd" is not memory or redis`}},
		{
			name: "bad delivery",
			cfg: eventbus.Config{Delivery: eventbus.Delivery{MaxAttempts: -1, Concurrency: -2, InitialBackoff: time.Second, MaxBackoff: time.Millisecond},
				PublishTimeout: -time.Second, Dedup: eventbus.Dedup{Size: -1}},
			want: []string{
				"events.delivery.max_attempts: -1 is negative",
				"events.delivery.concurrency: -2 is negative",
				"events.delivery.max_backoff: 1ms is below initial_backoff 1s",
				"events.publish_timeout: -1s is negative",
				"events.dedup.size: -1 is negative",
			},
		},
		{
			name: "bad nats settings",
			cfg: eventbus.Config{Driver: "nats", NATS: natsjs.Config{
				URL:           "http://nats:4222",
				User:          "u",
				Token:         config.NewSecret("t"),
				SubjectPrefix: "bad prefix",
				TLSCertFile:   "cert.pem",
				Streams: []natsjs.StreamConfig{
					{Name: "ORDERS", Subjects: []string{"orders.>"}},
					{Name: "ORDERS", Subjects: []string{"bad subject"}, Storage: "disk", Replicas: 7},
					{Name: "has.dot", MaxAge: time.Minute, DuplicateWindow: time.Hour},
				},
				Consumers: map[string]natsjs.ConsumerConfig{"billing": {AckWait: -time.Second}},
			}},
			want: []string{
				`events.nats.url: "http://nats:4222" is not a nats:// or tls:// URL`,
				"events.nats.user: set at most one of",
				"events.nats.tls_cert_file: tls_cert_file and tls_key_file go together",
				`events.nats.subject_prefix: "bad prefix"`,
				`events.nats.streams[1].name: "ORDERS" is listed twice`,
				`events.nats.streams[1].subjects[0]: "bad subject" is not a NATS subject`,
				`events.nats.streams[1].storage: "disk" is not file or memory`,
				"events.nats.streams[1].replicas: 7 is not between 1 and 5",
				`events.nats.streams[2].name: "has.dot" is not a stream name`,
				"events.nats.streams[2].subjects: at least one subject is required",
				"events.nats.streams[2].duplicate_window: 1h0m0s is longer than max_age 1m0s",
				"events.nats.consumers.billing.ack_wait: -1s is negative",
			},
		},
		{name: "nats settings ignored by memory", cfg: eventbus.Config{NATS: natsjs.Config{URL: "http://x"}}},
		{name: "outbox", cfg: eventbus.Config{Outbox: pgoutbox.Config{Enabled: true, URL: "postgres://app@db/orders", Password: config.NewSecret("p")}}},
		{
			name: "bad outbox settings",
			cfg: eventbus.Config{Outbox: pgoutbox.Config{Enabled: true, Table: "Bad",
				Relay: pgoutbox.RelayConfig{BatchSize: -1}}},
			want: []string{
				"events.outbox.url: required when events.outbox.enabled is true",
				`events.outbox.table: "Bad"`,
				"events.outbox.relay.batch_size: -1 is negative",
			},
		},
		{name: "outbox settings ignored when disabled", cfg: eventbus.Config{Outbox: pgoutbox.Config{Table: "Bad"}}},
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
			if err == nil {
				t.Fatalf("Validate() = nil, want %d problems", len(tt.want))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant a problem containing %q", err, w)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

// TestLoad loads the section through config.Load, as a service does: the
// defaults come from the tags, and bad values are reported with their keys.
func TestLoad(t *testing.T) {
	type cfg struct {
		Events eventbus.Config `koanf:"events"`
	}
	dir := t.TempDir()
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	write("events:\n  driver: nats\n  nats:\n    streams:\n      - name: ORDERS\n        subjects: [\"orders.>\"]\n")
	c, err := config.Load[cfg](ctx, config.WithDir(dir), config.WithEnvironment("test"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	e := c.Events
	if e.Delivery.MaxAttempts != 5 || e.Delivery.Concurrency != 16 || e.NATS.URL != natsjs.DefaultURL ||
		e.NATS.PublishWindow != natsjs.DefaultPublishWindow || e.Dedup.Window != 10*time.Minute {
		t.Errorf("defaults not applied: %+v", e)
	}
	if r := e.RabbitMQ; r.URL != rabbitmq.DefaultURL || r.Exchange != rabbitmq.DefaultExchange || r.PublishWindow != rabbitmq.DefaultPublishWindow ||
		r.ConnectTimeout != rabbitmq.DefaultConnectTimeout || r.Heartbeat != rabbitmq.DefaultHeartbeat ||
		r.ReconnectMin != rabbitmq.DefaultReconnectMin || r.ReconnectMax != rabbitmq.DefaultReconnectMax {
		t.Errorf("rabbitmq defaults not applied: %+v", r)
	}
	o := e.Outbox
	if o.Enabled || o.Schema != pgoutbox.DefaultSchema || o.Table != pgoutbox.DefaultTable || o.MaxConns != pgoutbox.DefaultMaxConns ||
		o.Relay.BatchSize != pgoutbox.DefaultBatchSize || o.Relay.Retention != pgoutbox.DefaultRetention ||
		o.Relay.PollInterval != pgoutbox.DefaultPollInterval || o.Relay.LockInterval != pgoutbox.DefaultLockInterval ||
		o.Relay.Timeout != pgoutbox.DefaultTimeout || o.Relay.StopTimeout != pgoutbox.DefaultStopTimeout ||
		o.Relay.InitialBackoff != pgoutbox.DefaultInitialBackoff || o.Relay.MaxBackoff != pgoutbox.DefaultMaxBackoff {
		t.Errorf("outbox defaults not applied: %+v", o)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("Validate of a loaded section = %v", err)
	}
	write("events:\n  driver: kafka\n  delivery:\n    concurency: 3\n  nats:\n    streams:\n      - name: X\n        storage: disk\n" +
		"  outbox:\n    enabled: true\n    relay:\n      batch_size: -1\n")
	_, err = config.Load[cfg](ctx, config.WithDir(dir), config.WithEnvironment("test"))
	for _, key := range []string{"events.driver", "events.delivery.concurency", "events.nats.streams[0].storage", "events.outbox.relay.batch_size"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Load of a bad section = %v, want a problem naming %s", err, key)
		}
	}
}

func roundTrip(t *testing.T, bus *events.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topic, err := events.NewTopic[*testingv1.Ping](ctx, bus, events.WithTopicName("eventbus.test."+strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_"))))
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	got := make(chan string, 1)
	if _, err := topic.Subscribe(ctx, "test", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		got <- e.Source + " " + e.Data.GetText()
		return nil
	}); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "hi"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	select {
	case s := <-got:
		if s != "//eventbus hi" {
			t.Errorf("received %q, want %q", s, "//eventbus hi")
		}
	case <-ctx.Done():
		t.Fatal("the event did not arrive")
	}
}

// TestOpenRefusesRedisDedup checks that Open does not quietly fall back to
// deduplicating in memory when the section asks for Redis.
func TestOpenRefusesRedisDedup(t *testing.T) {
	bus, err := eventbus.Open(t.Context(), eventbus.Config{Dedup: eventbus.Dedup{Store: "redis"}})
	if err == nil {
		bus.Close(t.Context())
		t.Fatal("Open with dedup.store redis = nil error, want a refusal naming events.dedup.store")
	}
	if !strings.Contains(err.Error(), "events.dedup.store") {
		t.Errorf("Open with dedup.store redis = %v, want it to name events.dedup.store", err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		cfg  eventbus.Config
	}{
		{"memory", eventbus.Config{Source: "//eventbus"}},
		{"embedded nats", eventbus.Config{Driver: "nats", Source: "//eventbus", NATS: natsjs.Config{
			Embedded: natsjs.EmbeddedConfig{Enabled: true, StoreDir: t.TempDir()}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus, err := eventbus.Open(ctx, tt.cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer bus.Close(ctx)
			roundTrip(t, bus)
		})
	}
}

func TestOpenNATS(t *testing.T) {
	url := testenv.NATS.URL(t)
	prefix := "loam-test-" + strings.ToLower(rand.Text()[:10])
	t.Cleanup(func() { deleteStreams(t, url, prefix+".>") })
	ctx := context.Background()
	bus, err := eventbus.Open(ctx, eventbus.Config{Driver: "nats", Source: "//eventbus", NATS: natsjs.Config{URL: url, SubjectPrefix: prefix}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer bus.Close(ctx)
	if s := bus.Capabilities().System; s != "nats" {
		t.Errorf("System = %q, want nats", s)
	}
	roundTrip(t, bus)
}

func TestOpenRabbitMQ(t *testing.T) {
	testenv.RabbitMQConn(t)
	url := testenv.RabbitMQ.URL(t)
	exchange := "loam.test." + strings.ToLower(rand.Text()[:10])
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err == nil {
			_, err = ch.QueueDelete("eventbus.test.testopenrabbitmq@test", false, false, false)
		}
		if err == nil {
			_, err = ch.QueueDelete("eventbus.test.testopenrabbitmq.dlq", false, false, false)
		}
		if err == nil {
			err = ch.ExchangeDelete(exchange, false, false)
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx := context.Background()
	bus, err := eventbus.Open(ctx, eventbus.Config{Driver: "rabbitmq", Source: "//eventbus", RabbitMQ: rabbitmq.Config{URL: url, Exchange: exchange}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer bus.Close(ctx)
	if s := bus.Capabilities().System; s != "rabbitmq" {
		t.Errorf("System = %q, want rabbitmq", s)
	}
	roundTrip(t, bus)
}

// deleteStreams deletes the streams that store subjects matching filter.
func deleteStreams(t *testing.T, url, filter string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(filter))
	for name := range names.Name() {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Errorf("cleanup: deleting stream %s: %v", name, err)
		}
	}
}

// outboxSchema returns the machine's PostgreSQL, a pool to it, and a
// schema name for the test's outbox, dropped when the test ends.
func outboxSchema(t *testing.T) (string, *pgxpool.Pool, string) {
	url := testenv.Postgres.URL(t)
	db := testenv.PostgresPool(t)
	schema := "loam_test_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		if _, err := db.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return url, db, schema
}

// TestOpenOutbox opens a Bus whose memory driver is wrapped in the outbox,
// on the machine's PostgreSQL, in a schema of the test's own: an event
// published in a transaction arrives once it commits.
func TestOpenOutbox(t *testing.T) {
	url, db, schema := outboxSchema(t)
	ctx := context.Background()
	bus, err := eventbus.Open(ctx, eventbus.Config{Source: "//eventbus", Outbox: pgoutbox.Config{Enabled: true, URL: url, Schema: schema}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer bus.Close(ctx)
	if s := bus.Capabilities().System; s != "loam.memory" {
		t.Errorf("System = %q, want the wrapped driver's, loam.memory", s)
	}
	topic, err := events.NewTopic[*testingv1.Ping](ctx, bus, events.WithTopicName("eventbus.test.outbox"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	if _, err := topic.Subscribe(ctx, "test", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		got <- e.Data.GetText()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, &testingv1.Ping{Text: "no tx"}); !errors.Is(err, pgoutbox.ErrNoTx) {
		t.Errorf("Publish without a transaction = %v, want pgoutbox.ErrNoTx", err)
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(pgoutbox.NewContext(ctx, tx), &testingv1.Ping{Text: "committed"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case text := <-got:
		if text != "committed" {
			t.Errorf("received %q, want committed", text)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the committed event did not arrive")
	}
}

// TestOpenBroker checks that OpenBroker hands the outbox its options, here
// a meter provider that sees the relay take the lead, and returns the bare
// driver without the outbox.
func TestOpenBroker(t *testing.T) {
	url, _, schema := outboxSchema(t)
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	b, err := eventbus.OpenBroker(ctx, eventbus.Config{Outbox: pgoutbox.Config{Enabled: true, URL: url, Schema: schema}},
		pgoutbox.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	if err != nil {
		t.Fatalf("OpenBroker: %v", err)
	}
	defer b.Close()
	if _, ok := b.(*pgoutbox.Broker); !ok {
		t.Fatalf("OpenBroker with the outbox enabled = %T, want *pgoutbox.Broker", b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !leads(t, reader) {
		if time.Now().After(deadline) {
			t.Fatal("the meter provider given to OpenBroker never saw the relay lead")
		}
		time.Sleep(20 * time.Millisecond)
	}
	bare, err := eventbus.OpenBroker(ctx, eventbus.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if _, ok := bare.(*memory.Broker); !ok {
		t.Errorf("OpenBroker without the outbox = %T, want *memory.Broker", bare)
	}
}

// leads reports whether the outbox's leader gauge reads 1.
func leads(t *testing.T, reader *sdkmetric.ManualReader) bool {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "loam.events.outbox.leader" && len(g.DataPoints) == 1 {
				return g.DataPoints[0].Value == 1
			}
		}
	}
	return false
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := eventbus.Open(ctx, eventbus.Config{Driver: "kafka"}); err == nil || !strings.Contains(err.Error(), "events.driver") {
		t.Errorf("Open with a bad driver = %v, want an error naming events.driver", err)
	}
	// Nothing listens on a port that was just freed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = eventbus.Open(ctx, eventbus.Config{Driver: "nats", NATS: natsjs.Config{URL: "nats://" + addr, ConnectTimeout: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "events.nats") {
		t.Errorf("Open with no server = %v, want an error naming events.nats", err)
	}
	_, err = eventbus.Open(ctx, eventbus.Config{Driver: "rabbitmq", RabbitMQ: rabbitmq.Config{URL: "amqp://" + addr + "/", ConnectTimeout: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "events.rabbitmq") || !strings.Contains(err.Error(), "connecting to amqp://"+addr) {
		t.Errorf("Open with no RabbitMQ = %v, want an error naming events.rabbitmq and the broker", err)
	}
	_, err = eventbus.Open(ctx, eventbus.Config{Driver: "rabbitmq", RabbitMQ: rabbitmq.Config{Prefetch: -1}})
	if err == nil || !strings.Contains(err.Error(), "events.rabbitmq.prefetch") {
		t.Errorf("Open with a negative prefetch = %v, want an error naming events.rabbitmq.prefetch", err)
	}
	_, err = eventbus.Open(ctx, eventbus.Config{Outbox: pgoutbox.Config{Enabled: true, URL: "postgres://x@" + addr + "/x?connect_timeout=1"}})
	if err == nil || !strings.Contains(err.Error(), "events.outbox") {
		t.Errorf("Open with no database = %v, want an error naming events.outbox", err)
	}
	if _, err := eventbus.Open(ctx, eventbus.Config{Delivery: eventbus.Delivery{InitialBackoff: time.Minute}}); err != nil {
		t.Errorf("Open with an initial backoff above the default cap = %v, want nil", err)
	}
}
