//go:build fault

package reliability_test

import (
	"crypto/rand"
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
	f.resetMidStream(ctx, proxy, n, "rabbitmq", " on a quorum queue", logs.reconnects.Load)
}
