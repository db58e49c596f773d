package natsjs_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/drivertest"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/internal/testenv"
)

// TestConformance runs the suite against the NATS server of the machine,
// through a proxy that each test owns.
func TestConformance(t *testing.T) {
	upstream := testenv.NATS.HostPort(t)
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, upstream), nil
	})
}

// TestConformanceEmbedded runs the suite against an embedded server, which
// needs nothing running on the machine.
func TestConformanceEmbedded(t *testing.T) {
	srv, err := natsjs.New(context.Background(), natsjs.Config{Embedded: natsjs.EmbeddedConfig{Enabled: true}})
	if err != nil {
		t.Fatalf("starting the embedded server: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	upstream := strings.TrimPrefix(srv.Conn().ConnectedUrl(), "nats://")
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, upstream), nil
	})
}

// harness connects every Broker through one proxy to upstream.
type harness struct {
	t     *testing.T
	proxy *testenv.Proxy
	admin *nats.Conn // direct, for cleaning up streams
}

func newHarness(t *testing.T, upstream string) *harness {
	admin, err := nats.Connect("nats://" + upstream)
	if err != nil {
		t.Fatalf("connecting to %s: %v", upstream, err)
	}
	return &harness{t: t, proxy: testenv.NewProxy(t, upstream), admin: admin}
}

func (h *harness) MakeBroker(ctx context.Context, t *testing.T) (driver.Broker, error) {
	return natsjs.New(ctx, natsjs.Config{
		URL:            "nats://" + h.proxy.Addr(),
		Name:           t.Name(),
		ReconnectWait:  100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
		PublishTimeout: 2 * time.Second,
		AckWait:        5 * time.Second,
		StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Hour},
	})
}

func (h *harness) NewTopicName(t *testing.T) string {
	name := "loam.test." + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		js, err := jetstream.New(h.admin)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, subject := range []string{name, name + ".dlq", name + ".other"} {
			stream, err := js.StreamNameBySubject(ctx, subject)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err == nil {
				err = js.DeleteStream(ctx, stream)
			}
			if err != nil {
				t.Errorf("cleanup: deleting the stream of %s: %v", subject, err)
			}
		}
	})
	return name
}

func (h *harness) Disconnect(*testing.T) (func(), bool) {
	h.proxy.Cut()
	return h.proxy.Restore, true
}

func (h *harness) Close() { h.admin.Close() }
