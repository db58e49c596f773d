package pgoutbox_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/drivertest"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/internal/testenv"
)

// TestConformanceMemory runs the suite against the outbox on the machine's
// PostgreSQL, relaying to the memory driver; Disconnect cuts the database.
func TestConformanceMemory(t *testing.T) {
	testenv.Postgres.URL(t)
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, func(context.Context, *testing.T) (driver.Broker, error) { return memory.New(), nil }, nil), nil
	})
}

// TestConformanceNATS runs the suite against the outbox relaying to the
// machine's NATS server; Disconnect cuts both the database and NATS.
func TestConformanceNATS(t *testing.T) {
	testenv.Postgres.URL(t)
	upstream := testenv.NATS.HostPort(t)
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		np := testenv.NewProxy(t, upstream)
		return newHarness(t, func(ctx context.Context, t *testing.T) (driver.Broker, error) {
			return natsjs.New(ctx, natsjs.Config{
				URL: "nats://" + np.Addr(), Name: t.Name(), ReconnectWait: 100 * time.Millisecond,
				ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second, AckWait: 5 * time.Second,
				StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Hour},
			})
		}, np), nil
	})
}

// harness gives each test its own schema, an outbox in it over a fresh
// inner broker, and proxies to cut; over NATS, it deletes the streams of
// the test's topics afterwards.
type harness struct {
	d       *db
	pgProxy *testenv.Proxy
	inner   func(context.Context, *testing.T) (driver.Broker, error)
	nats    *testenv.Proxy // nil over memory
}

func newHarness(t *testing.T, inner func(context.Context, *testing.T) (driver.Broker, error), np *testenv.Proxy) *harness {
	d := newDB(t)
	return &harness{d: d, pgProxy: testenv.NewProxy(t, testenv.Postgres.HostPort(t)), inner: inner, nats: np}
}

func (h *harness) MakeBroker(ctx context.Context, t *testing.T) (driver.Broker, error) {
	inner, err := h.inner(ctx, t)
	if err != nil {
		return nil, err
	}
	cfg := h.d.config(h.d.via(t, h.pgProxy.Addr()))
	cfg.AllowWithoutTx = true // the suite publishes outside transactions
	b, err := pgoutbox.New(ctx, inner, cfg, pgoutbox.WithLogger(testLogger(t)))
	if err != nil {
		inner.Close()
		return nil, err
	}
	return b, nil
}

func (h *harness) NewTopicName(t *testing.T) string {
	name := "loam.test." + strings.ToLower(rand.Text()[:12])
	if h.nats != nil {
		t.Cleanup(func() { deleteStreams(t, name, name+".>") })
	}
	return name
}

func (h *harness) Disconnect(*testing.T) (func(), bool) {
	h.pgProxy.Cut()
	if h.nats != nil {
		h.nats.Cut()
	}
	return func() {
		h.pgProxy.Restore()
		if h.nats != nil {
			h.nats.Restore()
		}
	}, true
}

func (h *harness) Close() {}
