package pgoutbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/events/pgoutbox"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// writers is how many goroutines commit transactions at once in the
// benchmarks, as a service's concurrent requests do.
const writers = 8

// BenchmarkCommitConsume measures commit-to-consume throughput and
// latency through the outbox over the memory driver: b.N events (a small
// OrderPlaced, one key per writer) published by 8 goroutines in
// transactions of 1 or 16 events, each transaction committed, relayed and
// handled by one subscription. The time runs from the first transaction to
// the last event handled; msgs/s is events per second, and p50-ms and
// p99-ms the time from a transaction's commit returning to its event's
// handler being called. Variants:
//
//   - raw-pgx: the same transactions writing the same rows (topic, ID,
//     key, header and body) into a table of the same shape with pgx alone,
//     the rows of a transaction in one pgx.Batch, and nothing relaying
//     them: the database's share, the ceiling of any outbox on this
//     machine.
//   - outbox: Topic.Publish (or PublishBatch) with pgoutbox.NewContext in
//     the transaction, with the defaults: each publishing transaction
//     sends a NOTIFY that wakes the relay; the relay sends through the
//     memory driver; the subscription handles every event, in order per
//     key.
//   - outbox-poll: the same with disable_notify and a poll interval of
//     20ms: no NOTIFY, so the database does not serialize the commits of
//     publishing transactions, and the relay finds events by polling.
//   - memory: the same events published without a database, straight to
//     the memory driver, for scale.
//
// BENCHMARKS.md has the results.
func BenchmarkCommitConsume(b *testing.B) {
	for _, perTx := range []int{1, 16} {
		b.Run(fmt.Sprintf("raw-pgx/tx=%d", perTx), func(b *testing.B) { benchRaw(b, perTx) })
		b.Run(fmt.Sprintf("outbox/tx=%d", perTx), func(b *testing.B) { benchOutbox(b, perTx, false) })
		b.Run(fmt.Sprintf("outbox-poll/tx=%d", perTx), func(b *testing.B) { benchOutbox(b, perTx, true) })
	}
	b.Run("memory", benchMemory)
}

// transactions runs n events' worth of transactions of perTx events from
// the writers, calling tx for each with the events' sequence numbers and
// recording when each commit returned.
func transactions(b *testing.B, pool *pgxpool.Pool, n, perTx int, tx func(ctx context.Context, tx pgx.Tx, w int, seqs []int) error, committed func(w int, seqs []int, at time.Time)) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for {
				start := int(next.Add(int64(perTx))) - perTx
				if start >= n {
					return
				}
				seqs := make([]int, 0, perTx)
				for i := start; i < min(start+perTx, n); i++ {
					seqs = append(seqs, i)
				}
				err := pgx.BeginFunc(ctx, pool, func(t pgx.Tx) error { return tx(ctx, t, w, seqs) })
				if err != nil {
					b.Error(err)
					return
				}
				if committed != nil {
					committed(w, seqs, time.Now())
				}
			}
		})
	}
	wg.Wait()
}

// header is what Loam's envelope puts in an event's header, for the raw
// rows to weigh the same.
var header = map[string]string{
	"ce-specversion": "1.0", "ce-id": "0192e0a0-0000-7000-8000-000000000000", "ce-source": "/loam/bench",
	"ce-type": "org.loam.testing.v1.order_placed", "ce-time": "2026-11-01T00:00:00.000000001Z",
	"content-type": "application/protobuf", "ce-dataschema": "https://type.googleapis.com/loam.testing.v1.OrderPlaced",
	"ce-partitionkey": "writer-0", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}

func benchRaw(b *testing.B, perTx int) {
	d := newDB(b)
	pool := pool(b, d.url)
	ctx := context.Background()
	table := pgx.Identifier{d.schema, "raw"}.Sanitize()
	if _, err := d.admin.Exec(ctx, pgoutbox.SchemaSQL(d.schema, "raw")); err != nil {
		b.Fatal(err)
	}
	h, _ := json.Marshal(header)
	body := []byte("\n\x07writer-0\x10\x01\x18\xe2\t\"\x04note")
	b.ReportAllocs()
	b.ResetTimer()
	transactions(b, pool, b.N, perTx, func(ctx context.Context, tx pgx.Tx, w int, seqs []int) error {
		var batch pgx.Batch // one round trip, as the outbox's one statement
		for _, s := range seqs {
			batch.Queue(`INSERT INTO `+table+` (topic, id, key, header, body) VALUES ($1, $2, $3, $4, $5)`,
				"loam.bench.orders", fmt.Sprintf("raw-%d", s), fmt.Sprintf("writer-%d", w), h, body)
		}
		return tx.SendBatch(ctx, &batch).Close()
	}, nil)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchOutbox(b *testing.B, perTx int, poll bool) {
	d := newDB(b)
	ctx := context.Background()
	cfg := pgoutbox.Config{URL: d.url, Schema: d.schema}
	if poll {
		cfg.DisableNotify, cfg.Relay.PollInterval = true, 20*time.Millisecond
	}
	broker, err := pgoutbox.New(ctx, memory.New(), cfg, pgoutbox.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	bus, err := events.NewBus(broker, events.WithSource("/loam/bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus, events.WithTopicName("loam.bench.orders"))
	if err != nil {
		b.Fatal(err)
	}
	commits := make([]atomic.Int64, b.N) // unix nanoseconds of each event's commit
	latencies := make([]time.Duration, b.N)
	var handled atomic.Int64
	done := make(chan struct{})
	if _, err := topic.Subscribe(ctx, "bench", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		seq := e.Data.GetSeq()
		for commits[seq].Load() == 0 { // the relay may beat the commit's return
			time.Sleep(10 * time.Microsecond)
		}
		latencies[seq] = time.Since(time.Unix(0, commits[seq].Load()))
		if handled.Add(1) == int64(b.N) {
			close(done)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	pool := pool(b, d.url)
	b.ReportAllocs()
	b.ResetTimer()
	transactions(b, pool, b.N, perTx, func(ctx context.Context, tx pgx.Tx, w int, seqs []int) error {
		msgs := make([]*testingv1.OrderPlaced, len(seqs))
		for i, s := range seqs {
			msgs[i] = &testingv1.OrderPlaced{OrderId: fmt.Sprintf("writer-%d", w), Seq: int64(s), AmountCents: 1250, Note: []byte("note")}
		}
		if len(msgs) == 1 {
			return topic.Publish(pgoutbox.NewContext(ctx, tx), msgs[0])
		}
		return topic.PublishBatch(pgoutbox.NewContext(ctx, tx), msgs)
	}, func(_ int, seqs []int, at time.Time) {
		for _, s := range seqs {
			commits[s].Store(at.UnixNano())
		}
	})
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("handled %d of %d events", handled.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
}

func benchMemory(b *testing.B) {
	ctx := context.Background()
	bus, err := events.NewBus(memory.New(), events.WithSource("/loam/bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	done := make(chan struct{})
	if _, err := topic.Subscribe(ctx, "bench", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		if handled.Add(1) == int64(b.N) {
			close(done)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			for s := next.Add(1) - 1; s < int64(b.N); s = next.Add(1) - 1 {
				if err := topic.Publish(ctx, &testingv1.OrderPlaced{OrderId: fmt.Sprintf("writer-%d", w), Seq: s}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
