package pgoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/pgoutbox"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// wait bounds the waits of these tests.
const wait = 30 * time.Second

// app is a service under test: a Bus over an outbox, an OrderPlaced topic
// and a subscriber that records what it handles.
type app struct {
	t      *testing.T
	broker *pgoutbox.Broker
	bus    *events.Bus
	topic  *events.Topic[*testingv1.OrderPlaced]
	rec    *recorder
}

// newApp makes a Bus over b and subscribes a recorder; the test's cleanup
// closes the Bus, and b with it.
func newApp(t *testing.T, b *pgoutbox.Broker, opts ...events.Option) *app {
	t.Helper()
	ctx := context.Background()
	bus, err := events.NewBus(b, append([]events.Option{events.WithSource("/loam/pgoutbox"), events.WithLogger(testLogger(t)),
		events.WithDefaults(events.WithBackoff(10*time.Millisecond, 100*time.Millisecond))}, opts...)...)
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
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus, events.WithTopicName("loam.test.orders"))
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	a := &app{t: t, broker: b, bus: bus, topic: topic, rec: &recorder{calls: map[string]int{}, keys: map[string][]int64{}}}
	if _, err := topic.Subscribe(ctx, "app", a.rec.handle); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return a
}

// newBroker makes an outbox Broker over inner with cfg, failing the test on
// error.
func newBroker(t *testing.T, inner driver.Broker, cfg pgoutbox.Config, opts ...pgoutbox.Option) *pgoutbox.Broker {
	t.Helper()
	b, err := pgoutbox.New(context.Background(), inner, cfg, append([]pgoutbox.Option{pgoutbox.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// order is an event to publish: its ID is its key and sequence number.
func order(key string, seq int) *testingv1.OrderPlaced {
	return &testingv1.OrderPlaced{OrderId: key, Seq: int64(seq)}
}

func idOf(o *testingv1.OrderPlaced) string { return fmt.Sprintf("%s/%d", o.GetOrderId(), o.GetSeq()) }

// publishTx publishes orders in one transaction on pool, and commits it,
// or rolls it back when commit is false. It returns the commit's error.
func (a *app) publishTx(ctx context.Context, pool *pgxpool.Pool, commit bool, orders ...*testingv1.OrderPlaced) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	txCtx := pgoutbox.NewContext(ctx, tx)
	for _, o := range orders {
		if err := a.topic.Publish(txCtx, o, events.WithID(idOf(o))); err != nil {
			return err
		}
	}
	if !commit {
		return tx.Rollback(ctx)
	}
	return tx.Commit(ctx)
}

// recorder records the events a subscriber handles.
type recorder struct {
	mu    sync.Mutex
	calls map[string]int     // by event ID
	keys  map[string][]int64 // sequence numbers by key, in the order handled
}

func (r *recorder) handle(_ context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[e.ID]++
	r.keys[e.Key] = append(r.keys[e.Key], e.Data.GetSeq())
	return nil
}

func (r *recorder) has(ids ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.calls[id] == 0 {
			return false
		}
	}
	return true
}

func (r *recorder) callsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

// check fails the test unless every ID of want was handled exactly once,
// no ID of never was handled, and each key's events were handled in the
// order of their sequence numbers.
func (r *recorder) check(t *testing.T, want, never []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range want {
		if c := r.calls[id]; c != 1 {
			t.Errorf("event %s handled %d times, want 1", id, c)
		}
	}
	for _, id := range never {
		if c := r.calls[id]; c != 0 {
			t.Errorf("event %s, rolled back, was handled %d times", id, c)
		}
	}
	for key, seqs := range r.keys {
		if !slices.IsSorted(seqs) {
			t.Errorf("events of key %s handled in the order %v, want increasing", key, seqs)
		}
	}
}

// TestCommitOutOfOrder is the outbox's classic trap: sequence numbers are
// drawn at insert and transactions commit in another order, so an event
// with a lower seq can commit after one with a higher seq was relayed. A
// relay that reads "seq above the last one relayed" loses it for good.
// Here A inserts first and commits last; B's event is relayed while A is
// open; A's must still be relayed once it commits, and C's, rolled back,
// never.
func TestCommitOutOfOrder(t *testing.T) {
	d := newDB(t)
	cfg := d.config(d.url)
	cfg.Relay.Retention = time.Hour // keep the rows to read their seqs
	a := newApp(t, newBroker(t, newFlaky(), cfg))
	pool := pool(t, d.url)
	ctx := ctxT(t)

	txA, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx)
	if err := a.topic.Publish(pgoutbox.NewContext(ctx, txA), order("a", 1), events.WithID("a/1")); err != nil {
		t.Fatalf("Publish in A: %v", err)
	}
	if err := a.publishTx(ctx, pool, true, order("b", 1)); err != nil {
		t.Fatalf("B: %v", err)
	}
	waitUntil(t, wait, "B's event, committed after A's insert", func() bool { return a.rec.has("b/1") })
	if err := a.publishTx(ctx, pool, false, order("c", 1)); err != nil {
		t.Fatalf("C: %v", err)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatalf("committing A: %v", err)
	}
	waitUntil(t, wait, "A's event, committed last with the lowest seq", func() bool { return a.rec.has("a/1") })
	time.Sleep(500 * time.Millisecond) // time for C's to show up, if it could
	a.rec.check(t, []string{"a/1", "b/1"}, []string{"c/1"})

	// The rows say the trap was laid: A's seq is below B's, and A was sent
	// after B. Nothing of C's reached the table.
	var seqA, seqB int64
	var aAfterB bool
	err = d.admin.QueryRow(ctx, `SELECT a.seq, b.seq, a.sent_at > b.sent_at FROM `+d.table()+` a, `+d.table()+` b
		WHERE a.id = 'a/1' AND b.id = 'b/1'`).Scan(&seqA, &seqB, &aAfterB)
	if err != nil {
		t.Fatalf("reading the rows: %v", err)
	}
	if seqA >= seqB || !aAfterB {
		t.Errorf("seq of A %d, of B %d, A sent after B: %v; want A's seq below B's and A sent after B", seqA, seqB, aAfterB)
	}
	if n := d.count(t, `SELECT count(*) FROM `+d.table()+` WHERE id = 'c/1'`); n != 0 {
		t.Errorf("%d rows of the rolled-back event", n)
	}
}

// TestConcurrentTransactions runs transactions concurrently, each with one
// to three events, committing in random order after random delays, one in
// four rolling back: every committed event is handled once, in order per
// key (each key's transactions are sequential), and no rolled-back one is.
func TestConcurrentTransactions(t *testing.T) {
	d := newDB(t)
	a := newApp(t, newBroker(t, newFlaky(), d.config(d.url)))
	pool := pool(t, d.url)
	ctx := ctxT(t)
	const writers, txs = 12, 10
	var mu sync.Mutex
	var committed, rolledBack []string
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("key-%d", w)
			seq := 0
			for i := range txs {
				var batch []*testingv1.OrderPlaced
				var ids []string
				for range 1 + rand.N(3) {
					seq++
					batch = append(batch, order(key, seq))
					ids = append(ids, idOf(batch[len(batch)-1]))
				}
				commit := (w+i)%4 != 0
				tx, err := pool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				for _, o := range batch {
					if err := a.topic.Publish(pgoutbox.NewContext(ctx, tx), o, events.WithID(idOf(o))); err != nil {
						t.Errorf("Publish: %v", err)
					}
				}
				time.Sleep(time.Duration(rand.N(30)) * time.Millisecond) // others commit meanwhile
				if commit {
					err = tx.Commit(ctx)
				} else {
					err = tx.Rollback(ctx)
				}
				if err != nil {
					t.Errorf("ending a transaction: %v", err)
				}
				mu.Lock()
				if commit {
					committed = append(committed, ids...)
				} else {
					rolledBack = append(rolledBack, ids...)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	waitUntil(t, wait, fmt.Sprintf("the %d committed events", len(committed)), func() bool { return a.rec.has(committed...) })
	time.Sleep(300 * time.Millisecond)
	a.rec.check(t, committed, rolledBack)
	if len(rolledBack) == 0 || len(committed) == 0 {
		t.Fatalf("%d committed and %d rolled back events; the test needs both", len(committed), len(rolledBack))
	}
}

// TestBrokerDown commits events while the wrapped broker refuses every
// send: nothing is lost, and once it is back every event is handled once,
// in order per key.
func TestBrokerDown(t *testing.T) {
	d := newDB(t)
	inner := newFlaky()
	a := newApp(t, newBroker(t, inner, d.config(d.url)))
	pool := pool(t, d.url)
	ctx := ctxT(t)
	inner.setDown(true)
	var ids []string
	for seq := 1; seq <= 10; seq++ {
		batch := []*testingv1.OrderPlaced{order("k1", seq), order("k2", seq), order("k3", 2*seq-1), order("k3", 2*seq)}
		if err := a.publishTx(ctx, pool, true, batch...); err != nil {
			t.Fatalf("publishing while the broker is down: %v", err)
		}
		for _, o := range batch {
			ids = append(ids, idOf(o))
		}
	}
	time.Sleep(500 * time.Millisecond) // the relay tries, and fails, meanwhile
	if n := d.count(t, `SELECT count(*) FROM `+d.table()+` WHERE sent_at IS NULL`); n != len(ids) {
		t.Errorf("%d events pending while the broker is down, want %d", n, len(ids))
	}
	if a.rec.has(ids[0]) {
		t.Fatal("an event was handled while the broker was down")
	}
	inner.setDown(false)
	waitUntil(t, wait, "every event after the broker came back", func() bool { return a.rec.has(ids...) })
	time.Sleep(300 * time.Millisecond)
	a.rec.check(t, ids, nil)
}

// TestRelayKilledBetweenSendAndMark kills the relaying process's session
// after its batch reached the broker and before it was marked sent: the
// standby relay takes over and sends the batch again, with the same IDs,
// and the subscriber's deduplication drops the copies.
func TestRelayKilledBetweenSendAndMark(t *testing.T) {
	d := newDB(t)
	inner := newFlaky()
	ctx := ctxT(t)
	raw := rawSub(t, inner, "loam.test.orders")

	release := make(chan struct{})
	var killed atomic.Bool
	kill := pgoutbox.WithAfterSend(func(conn *pgx.Conn) {
		if killed.Swap(true) {
			return
		}
		conn.Close(ctx) // the session ends, and the lock with it, as when the process dies
		<-release       // and this relay is gone for good
	})
	meter, reader := metered()
	a := newApp(t, newBroker(t, inner, d.config(d.url), kill, meter))
	t.Cleanup(func() { close(release) }) // before the Bus closes its Broker
	waitUntil(t, wait, "the first relay to lead", func() bool { return leads(t, reader) })
	standby := newBroker(t, inner, d.config(d.url))
	defer standby.Close()

	pool := pool(t, d.url)
	var batch []*testingv1.OrderPlaced
	var ids []string
	for seq := 1; seq <= 20; seq++ {
		batch = append(batch, order("k", seq))
		ids = append(ids, idOf(batch[len(batch)-1]))
	}
	if err := a.publishTx(ctx, pool, true, batch...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, wait, "every event handled", func() bool { return a.rec.has(ids...) })
	seen := map[string]int{}
	for len(seen) < len(ids) || slices.Min(mapsValues(seen)) < 2 {
		ms, err := raw.Receive(ctx, 100)
		if err != nil {
			t.Fatalf("receiving the broker's copies: %v (saw %v)", err, seen)
		}
		for _, m := range ms {
			seen[m.ID]++
			raw.Ack(ctx, m)
		}
	}
	if !killed.Load() {
		t.Fatal("the relay was never killed")
	}
	time.Sleep(300 * time.Millisecond)
	a.rec.check(t, ids, nil)
	if n := d.count(t, `SELECT count(*) FROM `+d.table()+` WHERE sent_at IS NULL`); n != 0 {
		t.Errorf("%d events still pending after the standby took over", n)
	}
}

func mapsValues(m map[string]int) []int {
	var v []int
	for _, n := range m {
		v = append(v, n)
	}
	return v
}

// TestPublishWithoutTx checks what a publish outside a transaction does:
// ErrNoTx by default, which events does not retry; an insert of its own
// with AllowWithoutTx; and a dead letter, which events publishes outside
// any transaction, goes through either way.
func TestPublishWithoutTx(t *testing.T) {
	d := newDB(t)
	a := newApp(t, newBroker(t, newFlaky(), d.config(d.url)))
	ctx := ctxT(t)
	start := time.Now()
	err := a.topic.Publish(ctx, order("k", 1))
	if !errors.Is(err, pgoutbox.ErrNoTx) {
		t.Errorf("Publish without a transaction = %v, want ErrNoTx", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("Publish without a transaction took %v: events retried ErrNoTx", time.Since(start))
	}
	if n := d.count(t, `SELECT count(*) FROM `+d.table()); n != 0 {
		t.Errorf("%d rows after a refused publish", n)
	}

	// A handler that fails for good: its dead letter goes through the
	// outbox, in a transaction of its own.
	dlq := rawSub(t, a.broker, "loam.test.orders.dlq")
	if _, err := a.topic.Subscribe(ctx, "strict", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		return events.Permanent(errors.New("refused"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.publishTx(ctx, pool(t, d.url), true, order("k", 2)); err != nil {
		t.Fatal(err)
	}
	ms, err := dlq.Receive(ctx, 1)
	if err != nil {
		t.Fatalf("receiving the dead letter: %v", err)
	}
	if ms[0].ID != "k/2" || ms[0].Header[events.HeaderDeadLetterCause] != events.CausePermanent {
		t.Errorf("dead letter %s with cause %q, want k/2 and %q", ms[0].ID, ms[0].Header[events.HeaderDeadLetterCause], events.CausePermanent)
	}

	// With AllowWithoutTx, a publish commits on its own.
	cfg := d.config(d.url)
	cfg.AllowWithoutTx = true
	cfg.Table = "standalone"
	free := newApp(t, newBroker(t, newFlaky(), cfg))
	if err := free.topic.Publish(ctx, order("k", 3), events.WithID("k/3")); err != nil {
		t.Fatalf("Publish with AllowWithoutTx: %v", err)
	}
	waitUntil(t, wait, "the event published without a transaction", func() bool { return free.rec.has("k/3") })
}

// TestPublishInBrokenTx checks that an insert that fails in the caller's
// transaction is returned at once, not retried, since the transaction is
// aborted; and that a message PostgreSQL text cannot hold is refused.
func TestPublishInBrokenTx(t *testing.T) {
	d := newDB(t)
	a := newApp(t, newBroker(t, newFlaky(), d.config(d.url)))
	pool := pool(t, d.url)
	ctx := ctxT(t)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1/0"); err == nil {
		t.Fatal("division by zero succeeded")
	}
	start := time.Now()
	err = a.topic.Publish(pgoutbox.NewContext(ctx, tx), order("k", 1))
	if err == nil || !strings.Contains(err.Error(), "caller's transaction") || !strings.Contains(err.Error(), "25P02") {
		t.Errorf("Publish in an aborted transaction = %v, want the caller's transaction error 25P02", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("Publish in an aborted transaction took %v: it was retried", time.Since(start))
	}

	raw, err := a.broker.OpenTopic(ctx, "loam.test.orders")
	if err != nil {
		t.Fatal(err)
	}
	tx2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx)
	for _, m := range []*driver.Message{
		{ID: "nul", Header: map[string]string{"x": "a\x00b"}},
		{ID: "latin1", Header: map[string]string{"x": "caf\xe9"}},
		{ID: "key", Key: "\x00"},
	} {
		err := raw.Send(pgoutbox.NewContext(ctx, tx2), []*driver.Message{m})
		if !errors.Is(err, events.ErrInvalid) || raw.IsRetryable(err) {
			t.Errorf("Send(%s) = %v (retryable %v), want events.ErrInvalid, not retryable", m.ID, err, raw.IsRetryable(err))
		}
	}
}

// TestRetention checks that sent rows are marked and kept for the
// retention, then deleted, and deleted at once without retention.
func TestRetention(t *testing.T) {
	d := newDB(t)
	pool := pool(t, d.url)
	ctx := ctxT(t)
	for _, retention := range []time.Duration{0, 700 * time.Millisecond} {
		t.Run(retention.String(), func(t *testing.T) {
			cfg := d.config(d.url)
			cfg.Table = fmt.Sprintf("retention_%d", retention.Milliseconds())
			cfg.Relay.Retention = retention
			a := newApp(t, newBroker(t, newFlaky(), cfg))
			if err := a.publishTx(ctx, pool, true, order("k", 1), order("k", 2)); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, wait, "both events", func() bool { return a.rec.has("k/1", "k/2") })
			table := pgx.Identifier{d.schema, cfg.Table}.Sanitize()
			sent := d.count(t, `SELECT count(*) FROM `+table+` WHERE sent_at IS NOT NULL`)
			if retention == 0 {
				waitUntil(t, 5*time.Second, "the sent rows to be deleted", func() bool { return d.count(t, `SELECT count(*) FROM `+table) == 0 })
				return
			}
			if sent != 2 {
				t.Errorf("%d rows marked sent right after sending, want 2", sent)
			}
			waitUntil(t, 5*time.Second, "the rows to expire", func() bool { return d.count(t, `SELECT count(*) FROM `+table) == 0 })
		})
	}
}

// TestDisableNotify checks that without notifications the relay still
// finds events, by polling.
func TestDisableNotify(t *testing.T) {
	d := newDB(t)
	cfg := d.config(d.url)
	cfg.DisableNotify = true
	a := newApp(t, newBroker(t, newFlaky(), cfg))
	ctx := ctxT(t)
	if err := a.publishTx(ctx, pool(t, d.url), true, order("k", 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, wait, "the event, found by polling", func() bool { return a.rec.has("k/1") })
}

// TestRowsWrittenBySQL checks the table as an interface: a row inserted by
// another program with plain SQL is relayed, header values that are not
// strings included.
func TestRowsWrittenBySQL(t *testing.T) {
	d := newDB(t)
	inner := newFlaky()
	ctx := ctxT(t)
	raw := rawSub(t, inner, "hand.written")
	b := newBroker(t, inner, d.config(d.url))
	defer b.Close()
	if _, err := d.admin.Exec(ctx, `INSERT INTO `+d.table()+` (topic, id, header, body) VALUES ('hand.written', 'sql-1', '{"ce-id": "sql-1", "n": 7}', '\x00ff')`); err != nil {
		t.Fatal(err)
	}
	ms, err := raw.Receive(ctx, 1)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	want := map[string]string{"ce-id": "sql-1", "n": "7"}
	if ms[0].ID != "sql-1" || !cmp.Equal(ms[0].Header, want) || !slices.Equal(ms[0].Body, []byte{0, 0xff}) {
		t.Errorf("relayed %s %v %x, want sql-1 %v 00ff", ms[0].ID, ms[0].Header, ms[0].Body, want)
	}
}
