package natsjs_test

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// benchWindow is the publish window of both sides of BenchmarkPublishConsume.
const benchWindow = 256

// benchEvent is the event both sides send: a realistic small order.
var benchEvent = &testingv1.OrderPlaced{OrderId: "order-0000042", Seq: 1, AmountCents: 129900, Note: []byte("gift wrap, leave at the door")}

// BenchmarkPublishConsume measures publish-to-consume throughput on the
// machine's NATS server: b.N events published with an asynchronous window
// of benchWindow and consumed, each acknowledged, through one durable pull
// consumer. raw is nats.go's jetstream API written by hand: PublishMsgAsync
// with Nats-Msg-Id and the same window, Consume with an Ack per message.
// raw-ce is the same with the CloudEvents headers that Loam sends.
// loam is Loam's Topic.PublishBatch and Subscribe over this driver, with
// everything that comes with it: the CloudEvents envelope, trace context
// propagation, per-key ordering, deduplication by ID and the delivery
// policy (telemetry providers are no-ops). Streams use file storage. The
// figure to compare is ns/op, per event; msgs/s is the same in events per
// second. BENCHMARKS.md has the method and results.
func BenchmarkPublishConsume(b *testing.B) {
	url := testenv.NATS.URL(b)
	b.Run("raw", func(b *testing.B) { benchRaw(b, url, false) })
	b.Run("raw-ce", func(b *testing.B) { benchRaw(b, url, true) })
	b.Run("loam", func(b *testing.B) { benchLoam(b, url) })
}

func benchTopic(b *testing.B, url string) string {
	name := "loam.bench." + strings.ToLower(rand.Text()[:10])
	b.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, subject := range []string{name, name + ".dlq"} {
			if stream, err := js.StreamNameBySubject(ctx, subject); err == nil {
				js.DeleteStream(ctx, stream)
			}
		}
	})
	return name
}

// ceHeaders are the CloudEvents headers that Loam sends with benchEvent,
// for the raw-ce variant: the envelope's cost on the wire and in the
// server, without Loam's code.
var ceHeaders = map[string]string{
	"ce-specversion": "1.0", "ce-source": "/natsjs.test", "ce-type": "org.loam.testing.v1.order_placed",
	"ce-time": "2026-11-22T06:50:45.492123456Z", "content-type": "application/protobuf",
	"ce-dataschema": "https://type.googleapis.com/loam.testing.v1.OrderPlaced", "ce-partitionkey": "order-0000042",
}

func benchRaw(b *testing.B, url string, ce bool) {
	ctx := context.Background()
	subject := benchTopic(b, url)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(benchWindow))
	if err != nil {
		b.Fatal(err)
	}
	stream := strings.ReplaceAll(subject, ".", "_")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, Duplicates: 2 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	consumer, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: "bench", FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy, MaxDeliver: 6, MaxAckPending: 1000,
	})
	if err != nil {
		b.Fatal(err)
	}
	var consumed atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	cc, err := consumer.Consume(func(m jetstream.Msg) {
		var e testingv1.OrderPlaced
		if err := proto.Unmarshal(m.Data(), &e); err != nil {
			b.Error(err)
		}
		m.Ack()
		if consumed.Add(1) == target {
			close(done)
		}
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	data, _ := proto.Marshal(benchEvent)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		msg := nats.NewMsg(subject)
		msg.Data = data
		id := rand.Text()
		msg.Header.Set(jetstream.MsgIDHeader, id)
		if ce {
			for k, v := range ceHeaders {
				msg.Header[k] = []string{v}
			}
			msg.Header["ce-id"] = []string{id}
		}
		for {
			_, err := js.PublishMsgAsync(msg)
			if err == nil {
				break
			}
			if err != jetstream.ErrTooManyStalledMsgs {
				b.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("publishes were not acknowledged")
	}
	waitConsumed(b, done, &consumed)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchLoam(b *testing.B, url string) {
	ctx := context.Background()
	name := benchTopic(b, url)
	broker, err := natsjs.New(ctx, natsjs.Config{URL: url, PublishWindow: benchWindow})
	if err != nil {
		b.Fatal(err)
	}
	bus, err := events.NewBus(broker)
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus, events.WithTopicName(name))
	if err != nil {
		b.Fatal(err)
	}
	var consumed atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	if _, err := topic.Subscribe(ctx, "bench", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		if consumed.Add(1) == target {
			close(done)
		}
		return nil
	}, events.WithConcurrency(32)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	publishAll(b, b.N, func(n int) error {
		batch := make([]*testingv1.OrderPlaced, n)
		for i := range batch {
			batch[i] = benchEvent
		}
		return topic.PublishBatch(ctx, batch)
	})
	waitConsumed(b, done, &consumed)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// publishAll publishes n events in batches of benchWindow from four
// goroutines, so the driver's window stays full as the raw side's does.
func publishAll(b *testing.B, n int, publish func(n int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				start := next.Add(benchWindow) - benchWindow
				if start >= int64(n) {
					return
				}
				if err := publish(int(min(benchWindow, int64(n)-start))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func waitConsumed(b *testing.B, done chan struct{}, consumed *atomic.Int64) {
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("consumed %d of %d events", consumed.Load(), b.N)
	}
}
