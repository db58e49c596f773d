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

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// effects counts a handler's effects per event ID: what deduplication
// must keep at one.
type effects struct {
	mu    sync.Mutex
	n     map[string]int
	first time.Time // of the first effect after mark
	mark  time.Time
	total atomic.Int64
}

func newEffects() *effects { return &effects{n: map[string]int{}} }

func (e *effects) add(id string) {
	e.mu.Lock()
	e.n[id]++
	if !e.mark.IsZero() && e.first.IsZero() {
		e.first = time.Now()
	}
	e.mu.Unlock()
	e.total.Add(1)
}

// since starts timing the first effect from now.
func (e *effects) since() {
	e.mu.Lock()
	e.mark, e.first = time.Now(), time.Time{}
	e.mu.Unlock()
}

// firstAfterMark returns how long after since the first effect came, or
// false if none came yet.
func (e *effects) firstAfterMark() (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.first.IsZero() {
		return 0, false
	}
	return e.first.Sub(e.mark), true
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
}

// newFlow opens a Bus on broker, a topic named name and a subscription to
// it, which the test closes.
func newFlow(t *testing.T, broker driver.Broker, name string) *flow {
	t.Helper()
	ctx := ctxT(t)
	bus, err := events.NewBus(broker, events.WithSource("//reliability"), events.WithPublishTimeout(20*time.Second),
		events.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bus.Close(cctx)
	})
	f := &flow{t: t, fx: newEffects()}
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
// Recovery is the time from the end of the resets to the first event
// handled, and to the last.
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

	published := make(chan struct{})
	go func() {
		defer close(published)
		f.publish(ctx, n, "reset")
	}()
	if !eventually(wait, func() bool { return f.fx.total.Load() >= n/3 }) {
		t.Fatalf("only %d events handled before the fault", f.fx.total.Load())
	}
	proxy.ResetPeer(0)
	time.Sleep(time.Second)
	proxy.Restore()
	f.fx.since()
	restored := time.Now()
	<-published
	ids := f.published()
	all := eventually(wait, func() bool { return f.fx.has(ids) })
	toAll := time.Since(restored)
	time.Sleep(500 * time.Millisecond) // late redeliveries would show as duplicates
	first, _ := f.fx.firstAfterMark()
	lost, dups := f.fx.tally(ids)
	lost += int64(n - len(ids))
	report(t, row{scenario: "nats", fault: "connection reset (TCP RST) at event ~3 300, every reconnection reset for 1s",
		load: fmt.Sprintf("4 publishers, 1 subscription (32 at once); %d publish calls; %d reconnections; first event %v after the restore",
			f.attempts.Load(), broker.Conn().Stats().Reconnects, first.Round(time.Millisecond)),
		requests: n, errors: f.pubErrs.Load(), lost: lost, dups: dups, recovery: toAll})
	if !all || lost != 0 {
		t.Errorf("%d of %d events were lost", lost, n)
	}
	if dups != 0 {
		t.Errorf("%d duplicate effects reached the handler, want 0 with dedup on", dups)
	}
	if broker.Conn().Stats().Reconnects == 0 {
		t.Error("the connection was never reset: the fault did not happen")
	}
}
