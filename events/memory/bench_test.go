package memory_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// BenchmarkPublishConsume measures publish-to-consume throughput in
// process: b.N events published in batches of 256 from four goroutines and
// handled by one subscription with the default concurrency of 16.
// "ordered" events share one key, so they are handled one at a time in
// order; "unordered" events have no key. "driver" is the memory driver
// alone: Send, Receive and Ack, without package events. msgs/s is events
// per second. BENCHMARKS.md has the results.
func BenchmarkPublishConsume(b *testing.B) {
	b.Run("ordered", func(b *testing.B) {
		benchEvents(b, func(i int) *testingv1.OrderPlaced { return &testingv1.OrderPlaced{OrderId: "order-1", Seq: int64(i)} })
	})
	b.Run("unordered", func(b *testing.B) {
		benchEvents(b, func(i int) *testingv1.Ping { return &testingv1.Ping{Text: "ping"} })
	})
	b.Run("driver", benchDriver)
}

func benchEvents[T proto.Message](b *testing.B, newEvent func(i int) T) {
	ctx := context.Background()
	bus, err := events.NewBus(memory.New())
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close(ctx)
	topic, err := events.NewTopic[T](ctx, bus)
	if err != nil {
		b.Fatal(err)
	}
	var consumed atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	if _, err := topic.Subscribe(ctx, "bench", func(ctx context.Context, e *events.Event[T]) error {
		if consumed.Add(1) == target {
			close(done)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	inParallel(b.N, func(start, n int) {
		batch := make([]T, n)
		for i := range batch {
			batch[i] = newEvent(start + i)
		}
		if err := topic.PublishBatch(ctx, batch); err != nil {
			b.Error(err)
		}
	})
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("consumed %d of %d", consumed.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchDriver(b *testing.B) {
	ctx := context.Background()
	broker := memory.New()
	defer broker.Close()
	dt, _ := broker.OpenTopic(ctx, "bench")
	ds, _ := broker.OpenSubscription(ctx, "bench", driver.SubscriptionConfig{Name: "bench", MaxAttempts: 5})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got := 0; got < b.N; {
			ms, err := ds.Receive(ctx, 16)
			if err != nil {
				b.Error(err)
				return
			}
			for _, m := range ms {
				ds.Ack(ctx, m)
			}
			got += len(ms)
		}
	}()
	body := []byte("0123456789abcdef0123456789abcdef")
	header := map[string]string{"ce-id": "x", "ce-type": "t", "ce-source": "/s", "ce-specversion": "1.0"}
	b.ReportAllocs()
	b.ResetTimer()
	inParallel(b.N, func(start, n int) {
		ms := make([]*driver.Message, n)
		for i := range ms {
			ms[i] = &driver.Message{ID: "x", Header: header, Body: body}
		}
		if err := dt.Send(ctx, ms); err != nil {
			b.Error(err)
		}
	})
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// inParallel calls publish for consecutive ranges of at most 256 of n
// items, from four goroutines.
func inParallel(n int, publish func(start, n int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				start := int(next.Add(256) - 256)
				if start >= n {
					return
				}
				publish(start, min(256, n-start))
			}
		})
	}
	wg.Wait()
}
