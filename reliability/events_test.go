//go:build fault

package reliability_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// effects counts a handler's effects per event ID: what deduplication
// must keep at one.
type effects struct {
	mu     sync.Mutex
	n      map[string]int
	mark   time.Time     // when the fault began, or zero
	last   time.Time     // of the last effect after mark
	maxGap time.Duration // the longest pause between effects after mark
	total  atomic.Int64
}

func newEffects() *effects { return &effects{n: map[string]int{}} }

func (e *effects) add(id string) {
	e.mu.Lock()
	e.n[id]++
	if !e.mark.IsZero() {
		now := time.Now()
		e.maxGap = max(e.maxGap, now.Sub(e.last))
		e.last = now
	}
	e.mu.Unlock()
	e.total.Add(1)
}

// faultAt marks the beginning of the fault: pauses in handling are
// measured from now on.
func (e *effects) faultAt() {
	e.mu.Lock()
	e.mark, e.last, e.maxGap = time.Now(), time.Now(), 0
	e.mu.Unlock()
}

// longestPause returns the longest time without an effect since faultAt:
// how long handling stopped.
func (e *effects) longestPause() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.maxGap
}

// recovery is the recovery column of an events scenario.
func recovery(pause, toAll time.Duration, from string) string {
	return fmt.Sprintf("handling paused %v at most; all delivered %v after the %s", pause.Round(time.Millisecond), toAll.Round(time.Millisecond), from)
}

// has reports whether every id took effect.
func (e *effects) has(ids []string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if e.n[id] == 0 {
			return false
		}
	}
	return true
}

// tally returns how many of ids never took effect, and how many effects
// beyond the first the handler had, over every id.
func (e *effects) tally(ids []string) (lost, dups int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if e.n[id] == 0 {
			lost++
		}
	}
	for _, n := range e.n {
		if n > 1 {
			dups += int64(n - 1)
		}
	}
	return lost, dups
}

// flow is a run of events through one Bus: publishers with their own
// event IDs, a subscription whose handler counts effects.
type flow struct {
	t        *testing.T
	topic    *events.Topic[*testingv1.Ping]
	fx       *effects
	mu       sync.Mutex
	ids      []string // published: Publish returned nil
	pubErrs  atomic.Int64
	attempts atomic.Int64
	metrics  *sdkmetric.ManualReader
}

// counter returns the sum of the Bus's counter name over its attributes.
func (f *flow) counter(name string) int64 {
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(context.Background(), &rm); err != nil {
		f.t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// deliveries says how many deliveries the subscription received and how
// many of them deduplication skipped, for a report.
func (f *flow) deliveries() string {
	return fmt.Sprintf("%d deliveries, %d skipped by dedup", f.counter("messaging.client.consumed.messages"), f.counter("loam.events.duplicates"))
}

// newFlow opens a Bus on broker, a topic named name and a subscription to
// it, which the test closes.
func newFlow(t *testing.T, broker driver.Broker, name string) *flow {
	t.Helper()
	ctx := ctxT(t)
	reader := sdkmetric.NewManualReader()
	bus, err := events.NewBus(broker, events.WithSource("//reliability"), events.WithPublishTimeout(20*time.Second),
		events.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		events.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bus.Close(cctx)
	})
	f := &flow{t: t, fx: newEffects(), metrics: reader}
	if f.topic, err = events.NewTopic[*testingv1.Ping](ctx, bus, events.WithTopicName(name)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.topic.Subscribe(ctx, "reliability", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		f.fx.add(e.ID)
		return nil
	}, events.WithConcurrency(32), events.WithBackoff(50*time.Millisecond, 500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	return f
}

// publish publishes n events from 4 publishers, each event with its own
// ID; a producer whose Publish fails publishes the same ID again, as a
// producer's retry does, up to 5 times. It returns when every publisher is
// done.
func (f *flow) publish(ctx context.Context, n int, prefix string) {
	var wg sync.WaitGroup
	const publishers = 4
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < n; i += publishers {
				id := fmt.Sprintf("%s-%05d", prefix, i)
				var err error
				for range 5 {
					f.attempts.Add(1)
					if err = f.topic.Publish(ctx, &testingv1.Ping{Text: id}, events.WithID(id)); err == nil {
						break
					}
					f.pubErrs.Add(1)
					if ctx.Err() != nil {
						return
					}
				}
				if err != nil {
					f.t.Errorf("publishing %s: gave up after 5 attempts: %v", id, err)
					continue
				}
				f.mu.Lock()
				f.ids = append(f.ids, id)
				f.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (f *flow) published() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

// resetMidStream publishes n events through f and, when a third have been
// handled, resets every connection through proxy (TCP RST), and every new
// one, for a second. It reports the scenario's row and fails the test on
// any event lost or handled twice. reconnects counts the driver's
// reconnections; queue says where the subscription reads, for the row.
func (f *flow) resetMidStream(ctx context.Context, proxy *testenv.Proxy, n int, scenario, queue string, reconnects func() int64) {
	t := f.t
	t.Helper()
	published := make(chan struct{})
	go func() {
		defer close(published)
		f.publish(ctx, n, "reset")
	}()
	if !eventually(wait, func() bool { return f.fx.total.Load() >= int64(n/3) }) {
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
	report(t, row{scenario: scenario, fault: "connection reset (TCP RST) at event ~3 300, every reconnection reset for 1s",
		load: fmt.Sprintf("4 publishers, 1 subscription (32 at once)%s; %d publish calls; %d reconnections; %s",
			queue, f.attempts.Load(), reconnects(), f.deliveries()),
		requests: int64(n), errors: f.pubErrs.Load(), lost: lost, dups: dups, recoveryNote: recovery(f.fx.longestPause(), toAll, "restore")})
	if !all || lost != 0 {
		t.Errorf("%d of %d events were lost", lost, n)
	}
	if dups != 0 {
		t.Errorf("%d duplicate effects reached the handler, want 0 with dedup on", dups)
	}
	if reconnects() == 0 {
		t.Error("the driver never reconnected: the fault did not happen")
	}
}

// topicName returns a topic name no other run uses, and deletes the
// streams of it and of its dead-letter topic through nc when the test
// ends.
func topicName(t *testing.T, nc func() *nats.Conn) string {
	name := "loam.reliability." + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		conn := nc()
		if conn == nil {
			return
		}
		js, err := jetstream.New(conn)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, subject := range []string{name, name + ".dlq"} {
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

// TestNATSReset resets the connection to NATS (TCP RST, through a proxy)
// in the middle of 10 000 events, and keeps resetting every new one for a
// second: every published event reaches the handler, and reaches it once.
// Recovery is the longest pause in handling from the first reset on, and
// the time from the end of the resets to the last event handled.
func TestNATSReset(t *testing.T) {
	const n = 10_000
	upstream := testenv.NATS.HostPort(t)
	admin := testenv.NATSConn(t)
	proxy := testenv.NewProxy(t, upstream)
	name := topicName(t, func() *nats.Conn { return admin })
	ctx := ctxT(t)
	broker, err := natsjs.New(ctx, natsjs.Config{
		URL:            "nats://" + proxy.Addr(),
		Name:           t.Name(),
		ReconnectWait:  100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
		PublishTimeout: 2 * time.Second,
		AckWait:        2 * time.Second,
		StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newFlow(t, broker, name)
	f.resetMidStream(ctx, proxy, n, "nats", "", func() int64 { return int64(broker.Conn().Stats().Reconnects) })
}
