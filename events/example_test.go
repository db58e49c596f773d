package events_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// A service publishes an event and another part of it, the billing
// subscription, handles it.
func Example() {
	ctx := context.Background()
	bus, err := events.NewBus(memory.New(), events.WithSource("//orders"))
	if err != nil {
		panic(err)
	}
	defer bus.Close(ctx)

	orders, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		panic(err)
	}
	handled := make(chan struct{})
	_, err = orders.Subscribe(ctx, "billing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		fmt.Printf("billing %s: %d cents (type %s, key %s, from %s, attempt %d)\n",
			e.Data.GetOrderId(), e.Data.GetAmountCents(), e.Type, e.Key, e.Source, e.Attempt)
		close(handled)
		return nil
	})
	if err != nil {
		panic(err)
	}
	if err := orders.Publish(ctx, &testingv1.OrderPlaced{OrderId: "o-1", AmountCents: 1250}); err != nil {
		panic(err)
	}
	<-handled
	// Output:
	// billing o-1: 1250 cents (type org.loam.testing.v1.order_placed, key o-1, from //orders, attempt 1)
}

// A failed handler is retried with backoff; it succeeds on the third
// attempt here.
func ExampleWithMaxAttempts() {
	ctx := context.Background()
	bus, _ := events.NewBus(memory.New())
	defer bus.Close(ctx)
	pings, _ := events.NewTopic[*testingv1.Ping](ctx, bus)
	done := make(chan struct{})
	pings.Subscribe(ctx, "flaky", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		if e.Attempt < 3 {
			fmt.Println("attempt", e.Attempt, "fails")
			return errors.New("downstream unavailable")
		}
		fmt.Println("attempt", e.Attempt, "succeeds")
		close(done)
		return nil
	}, events.WithMaxAttempts(5), events.WithBackoff(time.Millisecond, 10*time.Millisecond))
	pings.Publish(ctx, &testingv1.Ping{Text: "hello"})
	<-done
	// Output:
	// attempt 1 fails
	// attempt 2 fails
	// attempt 3 succeeds
}

// A handler that returns a Permanent error has its event dead-lettered at
// once; the dead letter carries the reason in its headers.
func ExamplePermanent() {
	ctx := context.Background()
	broker := memory.New()
	bus, _ := events.NewBus(broker)
	defer bus.Close(ctx)
	orders, _ := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)

	// An operator's view of the dead-letter topic, through the driver.
	dlq, _ := broker.OpenSubscription(ctx, orders.Name()+".dlq", driver.SubscriptionConfig{Name: "inspect"})

	orders.Subscribe(ctx, "billing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		if e.Data.GetAmountCents() < 0 {
			return events.Permanent(fmt.Errorf("order %s: negative amount", e.Data.GetOrderId()))
		}
		return nil
	})
	orders.Publish(ctx, &testingv1.OrderPlaced{OrderId: "o-2", AmountCents: -5}, events.WithID("evt-2"))

	ms, _ := dlq.Receive(ctx, 1)
	h := ms[0].Header
	fmt.Println(h[events.HeaderID], h[events.HeaderDeadLetterCause], h[events.HeaderDeadLetterAttempts])
	fmt.Println(h[events.HeaderDeadLetterReason])
	// Output:
	// evt-2 permanent 1
	// permanent: order o-2: negative amount
}

// Publishing with an ID makes retries safe: the subscriber handles one ID
// once, however many times it was published.
func ExampleWithID() {
	ctx := context.Background()
	bus, _ := events.NewBus(memory.New())
	defer bus.Close(ctx)
	pings, _ := events.NewTopic[*testingv1.Ping](ctx, bus)
	seen := make(chan string, 10)
	pings.Subscribe(ctx, "audit", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		seen <- e.ID + " " + e.Data.GetText()
		return nil
	}, events.WithConcurrency(1))
	for range 3 {
		pings.Publish(ctx, &testingv1.Ping{Text: "charge card"}, events.WithID("payment-42"))
	}
	pings.Publish(ctx, &testingv1.Ping{Text: "done"}, events.WithID("payment-43"))
	fmt.Println(<-seen)
	fmt.Println(<-seen)
	// Output:
	// payment-42 charge card
	// payment-43 done
}
