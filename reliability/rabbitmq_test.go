//go:build fault

package reliability_test

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loamhq/loam/events/rabbitmq"
	"github.com/loamhq/loam/internal/testenv"
)

// countingWriter counts the driver's reconnections in its log, and passes
// its warnings on to the test.
type countingWriter struct {
	t          *testing.T
	reconnects atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "rabbitmq: reconnected") {
		w.reconnects.Add(1)
	}
	return testWriter{w.t}.Write(p)
}

// TestRabbitMQReset resets the connection to RabbitMQ (TCP RST, through a
// proxy) in the middle of 10 000 events, and keeps resetting every new one
// for a second: every published event reaches the handler, and reaches it
// once. The broker keeps the events in a quorum queue; publishes whose
// confirm the reset swallowed are sent again with the same ID, and
// deduplication absorbs the copies.
func TestRabbitMQReset(t *testing.T) {
	const n = 10_000
	raw := testenv.RabbitMQ.URL(t)
	admin := testenv.RabbitMQConn(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	suffix := strings.ToLower(rand.Text()[:12])
	exchange, name := "loam.reliability."+suffix, "loam.reliability."+suffix
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer ch.Close()
		for _, q := range []string{name + "@reliability", name + ".dlq"} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: deleting queue %s: %v", q, err)
				return
			}
		}
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("cleanup: deleting exchange %s: %v", exchange, err)
		}
	})
	ctx := ctxT(t)
	logs := &countingWriter{t: t}
	broker, err := rabbitmq.New(ctx, rabbitmq.Config{
		URL:          u.String(),
		Name:         t.Name(),
		Exchange:     exchange,
		ReconnectMin: 50 * time.Millisecond,
		ReconnectMax: 500 * time.Millisecond,
	}, rabbitmq.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	if err != nil {
		t.Fatal(err)
	}
	f := newFlow(t, broker, name)

	published := make(chan struct{})
	go func() {
		defer close(published)
		f.publish(ctx, n, "reset")
	}()
	if !eventually(wait, func() bool { return f.fx.total.Load() >= n/3 }) {
		t.Fatalf("only %d events handled before the fault", f.fx.total.Load())
	}
	f.fx.faultAt()
	proxy.ResetPeer(0)
	time.Sleep(time.Second)
	proxy.Restore()
	restored := time.Now()
	<-published
	ids := f.published()
	all := eventually(wait, func() bool { return f.fx.has(ids) })
	toAll := time.Since(restored)
	time.Sleep(500 * time.Millisecond) // late redeliveries would show as duplicates
	lost, dups := f.fx.tally(ids)
	lost += int64(n - len(ids))
	report(t, row{scenario: "rabbitmq", fault: "connection reset (TCP RST) at event ~3 300, every reconnection reset for 1s",
		load: fmt.Sprintf("4 publishers, 1 subscription (32 at once) on a quorum queue; %d publish calls; %d reconnections; %s",
			f.attempts.Load(), logs.reconnects.Load(), f.deliveries()),
		requests: n, errors: f.pubErrs.Load(), lost: lost, dups: dups, recoveryNote: recovery(f.fx.longestPause(), toAll, "restore")})
	if !all || lost != 0 {
		t.Errorf("%d of %d events were lost", lost, n)
	}
	if dups != 0 {
		t.Errorf("%d duplicate effects reached the handler, want 0 with dedup on", dups)
	}
	if logs.reconnects.Load() == 0 {
		t.Error("the driver never reconnected: the fault did not happen")
	}
}
