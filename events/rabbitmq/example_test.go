package rabbitmq_test

import (
	"context"
	"fmt"
	"log"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/rabbitmq"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// A service publishes and consumes orders through RabbitMQ: the topic is a
// routing key on the loam.events exchange, the subscription "billing" a
// quorum queue. (It needs a broker, so it is compiled but not run.)
func ExampleNew() {
	ctx := context.Background()
	broker, err := rabbitmq.New(ctx, rabbitmq.Config{
		URL:  "amqp://orders@rabbitmq:5672/",
		Name: "orders",
	})
	if err != nil {
		log.Fatal(err) // a wrong URL or password fails here, naming the broker
	}
	bus, err := events.NewBus(broker, events.WithSource("//orders"))
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close(ctx) // drains the subscriptions, then closes the connection

	orders, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		log.Fatal(err)
	}
	// Subscribe before publishing: the subscription's queue is what routes
	// the topic's events (an event no queue is bound for fails with
	// rabbitmq.ErrUnroutable).
	if _, err := orders.Subscribe(ctx, "billing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		fmt.Println("bill", e.Data.GetOrderId(), "attempt", e.Attempt)
		return nil
	}); err != nil {
		log.Fatal(err)
	}
	if err := orders.Publish(ctx, &testingv1.OrderPlaced{OrderId: "o-1"}); err != nil {
		log.Fatal(err) // returns once the broker has confirmed the event
	}
}
