package natsjs_test

import (
	"context"
	"fmt"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/natsjs"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// A local run with an embedded NATS server: real JetStream streams and
// durable consumers, nothing to install.
func ExampleNew() {
	ctx := context.Background()
	broker, err := natsjs.New(ctx, natsjs.Config{Embedded: natsjs.EmbeddedConfig{Enabled: true}})
	if err != nil {
		panic(err)
	}
	bus, err := events.NewBus(broker, events.WithSource("//orders"))
	if err != nil {
		panic(err)
	}
	defer bus.Close(ctx) // closes the broker, and the embedded server with it

	orders, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		panic(err)
	}
	got := make(chan string)
	if _, err := orders.Subscribe(ctx, "billing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		got <- fmt.Sprintf("%s %s on %s", e.Type, e.Data.GetOrderId(), bus.Capabilities().System)
		return nil
	}); err != nil {
		panic(err)
	}
	if err := orders.Publish(ctx, &testingv1.OrderPlaced{OrderId: "o-1"}); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output:
	// org.loam.testing.v1.order_placed o-1 on nats
}
