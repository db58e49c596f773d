package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/drivertest"
	"github.com/loamhq/loam/events/rabbitmq"
	"github.com/loamhq/loam/internal/testenv"
)

// TestConformance runs the suite against the RabbitMQ of the machine,
// through a proxy that each test owns.
func TestConformance(t *testing.T) {
	testenv.RabbitMQConn(t) // skips, or fails, without RabbitMQ
	upstream := testenv.RabbitMQ.URL(t)
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, upstream), nil
	})
}

// harness connects every Broker through one proxy to RabbitMQ, on an
// exchange of its own, and deletes the queues they declared.
type harness struct {
	t        *testing.T
	upstream string // the broker's URL
	proxy    *testenv.Proxy
	exchange string

	mu      sync.Mutex
	brokers []*rabbitmq.Broker
}

func newHarness(t *testing.T, upstream string) *harness {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatalf("parsing %s: %v", upstream, err)
	}
	return &harness{t: t, upstream: upstream, proxy: testenv.NewProxy(t, u.Host), exchange: "loam.test." + strings.ToLower(rand.Text()[:10])}
}

// viaProxy is the broker's URL with the proxy's address.
func (h *harness) viaProxy() string {
	u, _ := url.Parse(h.upstream)
	u.Host = h.proxy.Addr()
	return u.String()
}

func (h *harness) MakeBroker(ctx context.Context, t *testing.T) (driver.Broker, error) {
	b, err := rabbitmq.New(ctx, rabbitmq.Config{
		URL:          h.viaProxy(),
		Name:         t.Name(),
		Exchange:     h.exchange,
		ReconnectMin: 50 * time.Millisecond,
		ReconnectMax: 500 * time.Millisecond,
	}, rabbitmq.WithLogger(testLogger(t)))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.brokers = append(h.brokers, b)
	h.mu.Unlock()
	return b, nil
}

func (h *harness) NewTopicName(t *testing.T) string {
	name := "loam.test." + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		topics := map[string]bool{name: true, name + ".dlq": true, name + ".other": true}
		h.mu.Lock()
		brokers := h.brokers
		h.mu.Unlock()
		queues := map[string]bool{}
		for _, b := range brokers {
			for q, topic := range rabbitmq.Queues(b) {
				if topics[topic] {
					queues[q] = true
				}
			}
		}
		deleteQueues(t, h.upstream, queues)
	})
	return name
}

// testLogger logs the driver's warnings to t until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a write after the test ended
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// deleteQueues deletes queues on the broker at url, directly.
func deleteQueues(t testing.TB, url string, queues map[string]bool) {
	if len(queues) == 0 {
		return
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("cleanup: deleting queue %s: %v", q, err)
			return
		}
	}
}

func (h *harness) Disconnect(*testing.T) (func(), bool) {
	h.proxy.Cut()
	return h.proxy.Restore, true
}

// Close deletes the harness's exchange.
func (h *harness) Close() {
	conn, err := amqp.Dial(h.upstream)
	if err != nil {
		h.t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		err = ch.ExchangeDelete(h.exchange, false, false)
	}
	if err != nil {
		h.t.Errorf("cleanup: deleting exchange %s: %v", h.exchange, err)
	}
}
