package pgoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// collect returns every metric by name: the sum of a counter's or gauge's
// points, the count of a histogram's.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += float64(dp.Value)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += float64(dp.Value)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += float64(dp.Count)
				}
			}
		}
	}
	return out
}

// metered returns an option that records the Broker's metrics, and their
// reader.
func metered() (pgoutbox.Option, *sdkmetric.ManualReader) {
	reader := sdkmetric.NewManualReader()
	return pgoutbox.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))), reader
}

func leads(t *testing.T, reader *sdkmetric.ManualReader) bool {
	return collect(t, reader)["loam.events.outbox.leader"] == 1
}

// TestPostgresCut cuts the database under both the application and the
// relay, through a proxy the test owns, while transactions commit, and
// restores it: every event whose commit succeeded is handled, once, in
// order; none whose transaction rolled back is.
func TestPostgresCut(t *testing.T) {
	d := newDB(t)
	proxy := testenv.NewProxy(t, testenv.Postgres.HostPort(t))
	url := d.via(t, proxy.Addr())
	leader, reader := metered()
	a := newApp(t, newBroker(t, newFlaky(), d.config(url), leader))
	pool := pool(t, url)
	ctx := ctxT(t)

	var committed, rolledBack []string
	seq := 0
	var cutOnce, restoreOnce sync.Once
	restored := make(chan struct{})
	failures := 0
	for len(committed) < 150 {
		if len(committed) == 50 {
			cutOnce.Do(func() {
				proxy.Cut()
				go func() {
					time.Sleep(time.Second)
					restoreOnce.Do(proxy.Restore)
					close(restored)
				}()
			})
		}
		seq++
		o := order("k", seq)
		commit := seq%10 != 0
		err := a.publishTx(ctx, pool, commit, o)
		switch {
		case err != nil:
			failures++ // the cut: the outcome of this commit is unknown
			time.Sleep(50 * time.Millisecond)
		case commit:
			committed = append(committed, idOf(o))
		default:
			rolledBack = append(rolledBack, idOf(o))
		}
	}
	<-restored
	if failures == 0 {
		t.Error("no transaction failed across the cut; the cut did not happen")
	}
	waitUntil(t, wait, "every committed event after the database came back", func() bool { return a.rec.has(committed...) })
	time.Sleep(300 * time.Millisecond)
	a.rec.check(t, committed, rolledBack)
	waitUntil(t, wait, "the relay to lead again", func() bool { return leads(t, reader) })
}

// TestStalledRelay stalls the relaying process's connection, through a
// proxy, as a stopped process or a broken network path does, without
// closing it: the server ends the idle session, so the lock goes to the
// standby, which relays; once the path is back, the first process stands
// by.
func TestStalledRelay(t *testing.T) {
	d := newDB(t)
	proxy := testenv.NewProxy(t, testenv.Postgres.HostPort(t))
	inner := newFlaky()
	cfg := d.config(d.via(t, proxy.Addr()))
	cfg.Relay.Timeout = time.Second
	r := cfg.Relay
	idle := 2 * (r.Timeout + r.MaxBackoff + r.PollInterval + r.LockInterval) // when the server ends an idle relay session
	firstMeter, first := metered()
	defer newBroker(t, inner, cfg, firstMeter).Close()
	waitUntil(t, wait, "the first relay to lead", func() bool { return leads(t, first) })
	cfg.URL = d.url
	standbyMeter, standby := metered()
	a := newApp(t, newBroker(t, inner, cfg, standbyMeter))

	proxy.Stall()
	start := time.Now()
	if err := a.publishTx(ctxT(t), pool(t, d.url), true, order("k", 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, wait, "the standby to take the lock", func() bool { return leads(t, standby) })
	if took := time.Since(start); took > idle+2*time.Second {
		t.Errorf("the standby took over %v after the stall, want about the idle session timeout %v", took, idle)
	}
	waitUntil(t, wait, "the event, relayed by the standby", func() bool { return a.rec.has("k/1") })
	proxy.Restore()
	time.Sleep(time.Second)
	if leads(t, first) || !leads(t, standby) {
		t.Errorf("after the path came back: first leads %v, standby leads %v; want the standby alone", leads(t, first), leads(t, standby))
	}
}

// TestBrokerDownNATS cuts NATS, through a proxy, while events commit, and
// restores it: every event is handled once, in order per key.
func TestBrokerDownNATS(t *testing.T) {
	d := newDB(t)
	proxy := testenv.NewProxy(t, testenv.NATS.HostPort(t))
	ctx := ctxT(t)
	nb, err := natsjs.New(ctx, natsjs.Config{URL: "nats://" + proxy.Addr(), ReconnectWait: 100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second, PublishTimeout: time.Second, StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Hour},
		SubjectPrefix: "loam-test-" + d.schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteStreams(t, "loam-test-"+d.schema+".>") })
	a := newApp(t, newBroker(t, nb, d.config(d.url)))
	pool := pool(t, d.url)
	var ids []string
	publish := func(from, to int) {
		for seq := from; seq <= to; seq++ {
			batch := []*testingv1.OrderPlaced{order("k1", seq), order("k2", seq)}
			if err := a.publishTx(ctx, pool, true, batch...); err != nil {
				t.Fatalf("publishing: %v", err)
			}
			ids = append(ids, idOf(batch[0]), idOf(batch[1]))
		}
	}
	publish(1, 10)
	waitUntil(t, wait, "the events before the cut", func() bool { return a.rec.has(ids...) })
	proxy.Cut()
	publish(11, 40)
	time.Sleep(1500 * time.Millisecond) // the relay's sends time out meanwhile
	proxy.Restore()
	waitUntil(t, wait, "every event after NATS came back", func() bool { return a.rec.has(ids...) })
	time.Sleep(300 * time.Millisecond)
	a.rec.check(t, ids, nil)
}

// TestOneRelayAtATime runs three processes' Brokers on one table: one
// relays, the others stand by; when it closes, another takes over, and
// events committed across the change are all handled.
func TestOneRelayAtATime(t *testing.T) {
	d := newDB(t)
	inner := newFlaky()
	var brokers []*pgoutbox.Broker
	var readers []*sdkmetric.ManualReader
	for range 3 {
		opt, reader := metered()
		brokers = append(brokers, newBroker(t, inner, d.config(d.url), opt))
		readers = append(readers, reader)
	}
	leaderIndex := func() int {
		n, at := 0, -1
		for i, r := range readers {
			if brokers[i] != nil && leads(t, r) {
				n++
				at = i
			}
		}
		if n > 1 {
			t.Fatalf("%d relays lead at once", n)
		}
		return at
	}
	waitUntil(t, wait, "a relay to lead", func() bool { return leaderIndex() >= 0 })
	first := leaderIndex()
	for range 10 { // and only one, for a while
		if i := leaderIndex(); i != first {
			t.Fatalf("the lead moved from %d to %d with nothing failing", first, i)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a := newApp(t, brokers[(first+1)%3]) // a Bus on one of the standbys publishes and consumes
	pool := pool(t, d.url)
	ctx := ctxT(t)
	var ids []string
	for seq := 1; seq <= 20; seq++ {
		if seq == 10 {
			if err := brokers[first].Close(); err != nil {
				t.Fatalf("closing the leading Broker: %v", err)
			}
			brokers[first] = nil
		}
		if err := a.publishTx(ctx, pool, true, order("k", seq)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, idOf(order("k", seq)))
	}
	waitUntil(t, wait, "another relay to lead", func() bool { return leaderIndex() >= 0 })
	waitUntil(t, wait, "every event across the change of relay", func() bool { return a.rec.has(ids...) })
	time.Sleep(300 * time.Millisecond)
	a.rec.check(t, ids, nil)
	for i, b := range brokers {
		if b != nil && b != a.broker {
			b.Close()
			brokers[i] = nil
		}
	}
}

// TestMetricsAndSpans checks the relay's telemetry while the broker is down
// (events pending, a lag, failures) and once it is back (events relayed,
// their delay, a relay span linked to each event's producer span).
func TestMetricsAndSpans(t *testing.T) {
	d := newDB(t)
	inner := newFlaky()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	meter, reader := metered()
	a := newApp(t, newBroker(t, inner, d.config(d.url), meter, pgoutbox.WithTracerProvider(tp)), events.WithTracerProvider(tp))
	pool := pool(t, d.url)
	ctx := ctxT(t)
	inner.setDown(true)
	if err := a.publishTx(ctx, pool, true, order("k", 1), order("k", 2), order("k", 3)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, wait, "pending events, a lag and failures", func() bool {
		m := collect(t, reader)
		return m["loam.events.outbox.pending"] == 3 && m["loam.events.outbox.lag"] > 0 && m["loam.events.outbox.failures"] > 0 &&
			m["loam.events.outbox.leader"] == 1
	})
	inner.setDown(false)
	waitUntil(t, wait, "the events", func() bool { return a.rec.has("k/1", "k/2", "k/3") })
	waitUntil(t, wait, "the relayed count and delays", func() bool {
		m := collect(t, reader)
		return m["loam.events.outbox.relayed"] == 3 && m["loam.events.outbox.delay"] == 3 && m["loam.events.outbox.pending"] == 0
	})
	var producers []string
	var relay sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "send loam.test.orders":
			producers = append(producers, s.SpanContext().SpanID().String())
		case "relay loam.test.orders":
			if s.Status().Code != codes.Error { // the one that went through, after the failures
				relay = s
			}
		}
	}
	if relay == nil || len(producers) != 3 {
		t.Fatalf("%d producer spans and relay span %v; want 3 and one", len(producers), relay)
	}
	var linked []string
	for _, l := range relay.Links() {
		linked = append(linked, l.SpanContext.SpanID().String())
	}
	for _, p := range producers {
		if !strings.Contains(strings.Join(linked, ","), p) {
			t.Errorf("relay span links %v, missing producer span %s", linked, p)
		}
	}
}

// TestClose checks that Close is bounded by the stop timeout while a send
// hangs, that
// the events left stay for the next relay, and that everything fails with
// driver.ErrClosed afterwards.
func TestClose(t *testing.T) {
	d := newDB(t)
	inner := newFlaky()
	ctx := ctxT(t)
	cfg := d.config(d.url)
	cfg.Relay.StopTimeout = time.Second
	b := newBroker(t, inner, cfg)
	dt, err := b.OpenTopic(ctx, "loam.test.close")
	if err != nil {
		t.Fatal(err)
	}
	inner.setDown(true)
	pool := pool(t, d.url)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dt.Send(pgoutbox.NewContext(ctx, tx), []*driver.Message{{ID: "left", Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	inner.set("stalled") // the relay's next send hangs
	time.Sleep(cfg.Relay.MaxBackoff + 100*time.Millisecond)
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if took := time.Since(start); took < cfg.Relay.StopTimeout/2 || took > cfg.Relay.StopTimeout+time.Second {
		t.Errorf("Close with a send hanging took %v, want about the stop timeout %v", took, cfg.Relay.StopTimeout)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	tx2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx)
	if err := dt.Send(pgoutbox.NewContext(ctx, tx2), []*driver.Message{{ID: "late"}}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Send after Close = %v, want driver.ErrClosed", err)
	}
	if _, err := b.OpenTopic(ctx, "x"); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("OpenTopic after Close = %v, want driver.ErrClosed", err)
	}
	if _, err := b.OpenSubscription(ctx, "x", driver.SubscriptionConfig{Name: "x", MaxAttempts: 1, MaxInFlight: 1}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("OpenSubscription after Close = %v, want driver.ErrClosed", err)
	}
	if n := d.count(t, `SELECT count(*) FROM `+d.table()+` WHERE id = 'left' AND sent_at IS NULL`); n != 1 {
		t.Errorf("%d unsent rows of the event left at Close, want 1", n)
	}

	// The next process relays it.
	inner.setDown(false)
	raw := rawSub(t, inner, "loam.test.close")
	next := newBroker(t, inner, cfg)
	defer next.Close()
	ms, err := raw.Receive(ctx, 1)
	if err != nil || ms[0].ID != "left" {
		t.Fatalf("the next relay sent %v, %v; want the event left", ms, err)
	}
}

// TestMigration checks that New creates the table idempotently, with
// replicas starting together, in a schema of its own; that SchemaSQL
// creates the same table for a service's own migrations; and that New
// fails naming the setting when the database is unreachable.
func TestMigration(t *testing.T) {
	d := newDB(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			cfg := d.config(d.url)
			cfg.Relay.Disabled = true
			b, err := pgoutbox.New(ctx, newFlaky(), cfg)
			if err == nil {
				err = b.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("New, four at once: %v", err)
		}
	}
	if n := d.count(t, `SELECT count(*) FROM pg_indexes WHERE schemaname = $1`, d.schema); n != 2 {
		t.Errorf("%d indexes on the table, want 2 (the key and pending)", n)
	}

	// A service's own migration, then New without one.
	if _, err := d.admin.Exec(ctx, pgoutbox.SchemaSQL(d.schema, "own")); err != nil {
		t.Fatalf("running SchemaSQL: %v", err)
	}
	if _, err := d.admin.Exec(ctx, pgoutbox.SchemaSQL(d.schema, "own")); err != nil {
		t.Fatalf("running SchemaSQL again: %v", err)
	}
	cfg := d.config(d.url)
	cfg.Table, cfg.SkipMigration, cfg.AllowWithoutTx = "own", true, true
	a := newApp(t, newBroker(t, newFlaky(), cfg))
	if err := a.topic.Publish(ctx, order("k", 1), events.WithID("k/1")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, wait, "an event through the table SchemaSQL made", func() bool { return a.rec.has("k/1") })

	// A missing table with SkipMigration fails the publish, naming it.
	cfg.Table = "missing"
	b := newBroker(t, newFlaky(), cfg)
	defer b.Close()
	dt, err := b.OpenTopic(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := dt.Send(ctx, []*driver.Message{{ID: "x"}}); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("Send to a missing table = %v, want an error naming it", err)
	}
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	d := newDB(t)
	proxy := testenv.NewProxy(t, testenv.Postgres.HostPort(t))
	unreachable := d.via(t, proxy.Addr())
	proxy.Cut()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tests := []struct {
		name string
		cfg  pgoutbox.Config
		want string
	}{
		{"bad config", pgoutbox.Config{URL: d.url, Table: "Bad"}, "events.outbox.table"},
		{"no URL", pgoutbox.Config{}, "events.outbox.url: required"},
		{"unreachable", pgoutbox.Config{URL: unreachable}, "events.outbox.url"},
		{"cannot create", pgoutbox.Config{URL: d.url, Schema: "pg_catalog"}, "events.outbox.table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := pgoutbox.New(short, newFlaky(), tt.cfg)
			if err == nil {
				b.Close()
				t.Fatalf("New = nil error, want one naming %s", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := pgoutbox.New(ctx, nil, pgoutbox.Config{URL: d.url}); !errors.Is(err, pgoutbox.ErrInvalidConfig) {
		t.Errorf("New(nil broker) = %v, want ErrInvalidConfig", err)
	}
	// WithPool: the application's pool, which Close leaves open.
	p := pool(t, d.url)
	cfg := pgoutbox.Config{Schema: d.schema, Table: "with_pool", Relay: pgoutbox.RelayConfig{Disabled: true}}
	b, err := pgoutbox.New(ctx, newFlaky(), cfg, pgoutbox.WithPool(p))
	if err != nil {
		t.Fatalf("New(WithPool) = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Errorf("the pool given to WithPool is closed after Close: %v", err)
	}
	if n := d.count(t, fmt.Sprintf(`SELECT count(*) FROM %s`, pgx.Identifier{d.schema, "with_pool"}.Sanitize())); n != 0 {
		t.Errorf("%d rows in a new table", n)
	}
}
