//go:build fault

package reliability_test

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// TestOutboxBrokerDown commits orders, each with its event in the same
// transaction through the Postgres outbox, from 4 writers, while NATS is
// cut off from the relay (and from the subscriber) for 2 seconds: every
// committed order's event is delivered after NATS is back, once, and no
// event of a rolled-back transaction is ever delivered. Recovery is the
// longest pause in handling from the cut on, and the time from the restore
// until the last event is handled.
func TestOutboxBrokerDown(t *testing.T) {
	const txs, writers = 2000, 4
	admin := testenv.PostgresPool(t)
	pgURL := testenv.Postgres.URL(t)
	natsAdmin := testenv.NATSConn(t)
	proxy := testenv.NewProxy(t, testenv.NATS.HostPort(t))
	ctx := ctxT(t)
	schema, _ := testenv.PostgresSchema(t, "loam_reliability")
	orders := pgx.Identifier{schema, "orders"}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE TABLE "+orders+" (id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	name := topicName(t, func() *nats.Conn { return natsAdmin })
	nb, err := natsjs.New(ctx, natsjs.Config{
		URL: "nats://" + proxy.Addr(), Name: t.Name(), ReconnectWait: 100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second, PublishTimeout: time.Second, AckWait: 2 * time.Second,
		StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	outbox, err := pgoutbox.New(ctx, nb, pgoutbox.Config{
		URL: pgURL, Schema: schema,
		Relay: pgoutbox.RelayConfig{PollInterval: 200 * time.Millisecond, LockInterval: 200 * time.Millisecond,
			Timeout: 2 * time.Second, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, StopTimeout: 3 * time.Second},
	}, pgoutbox.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		t.Fatal(err)
	}
	f := newFlow(t, outbox, name)

	var mu sync.Mutex
	var committed, rolledBack []string
	var txErrs atomic.Int64
	// One transaction in ten rolls back, after publishing its event.
	write := func(id string, commit bool) error {
		return pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" (id) VALUES ($1)", id); err != nil {
				return err
			}
			if err := f.topic.Publish(pgoutbox.NewContext(ctx, tx), &testingv1.Ping{Text: id}, events.WithID(id)); err != nil {
				return err
			}
			if !commit {
				return errRollback
			}
			return nil
		})
	}
	written := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < txs; i += writers {
				id := fmt.Sprintf("order-%05d", i)
				commit := i%10 != 9
				err := write(id, commit)
				mu.Lock()
				switch {
				case err == nil && commit:
					committed = append(committed, id)
				case errors.Is(err, errRollback):
					rolledBack = append(rolledBack, id)
				default:
					txErrs.Add(1)
					t.Errorf("transaction of %s: %v", id, err)
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond) // about 1 000 transactions a second
			}
		})
	}
	go func() { wg.Wait(); close(written) }()
	if !eventually(wait, func() bool { return f.fx.total.Load() >= txs/4 }) {
		t.Fatalf("only %d events handled before the fault", f.fx.total.Load())
	}
	f.fx.faultAt()
	proxy.Cut()
	cutAt := f.fx.total.Load()
	time.Sleep(2 * time.Second)
	mu.Lock()
	duringCut := len(committed) + len(rolledBack)
	mu.Unlock()
	restored := time.Now()
	proxy.Restore()
	<-written
	all := eventually(wait, func() bool { return f.fx.has(committed) })
	toAll := time.Since(restored)
	time.Sleep(500 * time.Millisecond) // late redeliveries would show as duplicates
	lost, dups := f.fx.tally(committed)
	var phantoms int
	for _, id := range rolledBack {
		f.fx.mu.Lock()
		if f.fx.n[id] > 0 {
			phantoms++
		}
		f.fx.mu.Unlock()
	}
	var rows int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM "+orders).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	report(t, row{scenario: "outbox", fault: "NATS cut off from the relay for 2s",
		load: fmt.Sprintf("4 writers, %d transactions (%d committed, %d rolled back; %d written by the cut's end, %d events handled at the cut); %d events of rolled-back transactions delivered; %s",
			txs, len(committed), len(rolledBack), duringCut, cutAt, phantoms, f.deliveries()),
		requests: int64(len(committed)), errors: txErrs.Load(), lost: lost, dups: dups, recoveryNote: recovery(f.fx.longestPause(), toAll, "restore")})
	if rows != len(committed) {
		t.Errorf("%d orders in the table, want the %d committed", rows, len(committed))
	}
	if !all || lost != 0 {
		t.Errorf("%d of %d committed events were lost", lost, len(committed))
	}
	if dups != 0 {
		t.Errorf("%d duplicate effects reached the handler, want 0 with dedup on", dups)
	}
	if phantoms != 0 {
		t.Errorf("%d events of rolled-back transactions were delivered", phantoms)
	}
}

// errRollback makes pgx.BeginFunc roll back.
var errRollback = errors.New("reliability: roll back on purpose")
