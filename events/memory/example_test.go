package memory_test

import (
	"context"
	"fmt"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
)

// The driver on its own, as package events uses it: a message sent to a
// topic reaches each subscription, and comes back after a Nack until it is
// acknowledged.
func ExampleNew() {
	ctx := context.Background()
	broker := memory.New()
	defer broker.Close()
	sub, _ := broker.OpenSubscription(ctx, "orders", driver.SubscriptionConfig{Name: "billing", MaxAttempts: 3})
	topic, _ := broker.OpenTopic(ctx, "orders")
	topic.Send(ctx, []*driver.Message{{ID: "m-1", Header: map[string]string{"ce-type": "order"}, Body: []byte("o-1")}})

	ms, _ := sub.Receive(ctx, 10)
	fmt.Println(ms[0].ID, string(ms[0].Body), "attempt", ms[0].Attempt)
	sub.Nack(ctx, ms[0], 0)
	ms, _ = sub.Receive(ctx, 10)
	fmt.Println(ms[0].ID, string(ms[0].Body), "attempt", ms[0].Attempt)
	sub.Ack(ctx, ms[0])
	// Output:
	// m-1 o-1 attempt 1
	// m-1 o-1 attempt 2
}
