package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/rabbitmq"
	"github.com/loamhq/loam/internal/testenv"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// benchWindow is the publisher confirm window of both sides of
// BenchmarkPublishConsume.
const benchWindow = 256

// benchEvent is the event both sides send: a realistic small order.
var benchEvent = &testingv1.OrderPlaced{OrderId: "order-0000042", Seq: 1, AmountCents: 129900, Note: []byte("gift wrap, leave at the door")}

// ceHeaders are the CloudEvents headers that Loam sends with benchEvent,
// which the raw side sends too, so both put the same bytes on the wire.
var ceHeaders = map[string]string{
	"ce-specversion": "1.0", "ce-source": "/rabbitmq.test", "ce-type": "org.loam.testing.v1.order_placed",
	"ce-time": "2026-11-22T06:50:45.492123456Z", "ce-dataschema": "https://type.googleapis.com/loam.testing.v1.OrderPlaced",
	"ce-partitionkey": "order-0000042",
}

// BenchmarkPublishConsume measures publish-to-consume throughput on the
// machine's RabbitMQ: b.N events published, persistent and mandatory, with
// publisher confirms pipelined within a window of benchWindow, and
// consumed from a durable quorum queue with manual acknowledgement and a
// prefetch of 64, each acknowledged. raw is amqp091-go written by hand:
// PublishWithDeferredConfirm from four goroutines sharing the window, the
// CloudEvents headers and message-id, Consume with an Ack per message.
// loam is Loam's Topic.PublishBatch and Subscribe over this driver, with
// the CloudEvents envelope, trace propagation (no-op providers), per-key
// ordering, deduplication by ID and the delivery policy. The figure to
// compare is ns/op, per event; msgs/s is the same in events per second.
func BenchmarkPublishConsume(b *testing.B) {
	testenv.RabbitMQConn(b)
	url := testenv.RabbitMQ.URL(b)
	b.Run("raw", func(b *testing.B) { benchRaw(b, url) })
	b.Run("loam", func(b *testing.B) { benchLoam(b, url) })
}

// benchTopology is an exchange and a topic of one run, deleted after it
// with the queue of subscription "bench".
func benchTopology(b *testing.B, url string) (exchange, topic string) {
	exchange = "loam.bench." + strings.ToLower(rand.Text()[:10])
	topic = "loam.bench." + strings.ToLower(rand.Text()[:10])
	b.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			ch.QueueDelete(topic+"@bench", false, false, false)
			ch.QueueDelete(topic+".dlq", false, false, false)
			ch.ExchangeDelete(exchange, false, false)
		}
	})
	return exchange, topic
}

func benchRaw(b *testing.B, url string) {
	exchange, topic := benchTopology(b, url)
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	pub, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	sub, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	queue := topic + "@bench"
	if _, err := sub.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum, "x-delivery-limit": 5}); err != nil {
		b.Fatal(err)
	}
	if err := sub.QueueBind(queue, topic, exchange, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := sub.Qos(64, 0, false); err != nil {
		b.Fatal(err)
	}
	if err := pub.Confirm(false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := sub.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var consumed atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	go func() {
		for d := range deliveries {
			var e testingv1.OrderPlaced
			if err := proto.Unmarshal(d.Body, &e); err != nil {
				b.Error(err)
			}
			d.Ack(false)
			if consumed.Add(1) == target {
				close(done)
			}
		}
	}()
	data, _ := proto.Marshal(benchEvent)
	window := make(chan struct{}, benchWindow)
	b.ReportAllocs()
	b.ResetTimer()
	publishAll(b, b.N, func(n int) error {
		confirms := make(chan *amqp.DeferredConfirmation, n)
		var wg sync.WaitGroup
		wg.Go(func() {
			for dc := range confirms {
				if !dc.Wait() {
					b.Error("nacked")
				}
				<-window
			}
		})
		for range n {
			window <- struct{}{}
			id := rand.Text()
			h := make(amqp.Table, len(ceHeaders)+1)
			for k, v := range ceHeaders {
				h[k] = v
			}
			h["ce-id"] = id
			dc, err := pub.PublishWithDeferredConfirm(exchange, topic, true, false, amqp.Publishing{
				Headers: h, ContentType: "application/protobuf", MessageId: id, DeliveryMode: amqp.Persistent, Body: data,
			})
			if err != nil {
				return err
			}
			confirms <- dc
		}
		close(confirms)
		wg.Wait()
		return nil
	})
	waitConsumed(b, done, &consumed)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchLoam(b *testing.B, url string) {
	ctx := context.Background()
	exchange, name := benchTopology(b, url)
	broker, err := rabbitmq.New(ctx, rabbitmq.Config{URL: url, Exchange: exchange, PublishWindow: benchWindow, Prefetch: 64})
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
	}, events.WithConcurrency(32), events.WithMaxAttempts(5)); err != nil {
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
// goroutines, so that the window stays full.
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
