package eventbus_test

import (
	"context"
	"fmt"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/eventbus"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// A service opens its Bus from the events section of its configuration;
// here the section asks for the in-memory driver and three attempts per
// event.
func ExampleOpen() {
	ctx := context.Background()
	cfg := eventbus.Config{
		Driver:   eventbus.DriverMemory,
		Source:   "//captures",
		Delivery: eventbus.Delivery{MaxAttempts: 3},
	}
	bus, err := eventbus.Open(ctx, cfg)
	if err != nil {
		panic(err)
	}
	defer bus.Close(ctx)

	pings, _ := events.NewTopic[*testingv1.Ping](ctx, bus)
	got := make(chan string)
	pings.Subscribe(ctx, "audit", func(ctx context.Context, e *events.Event[*testingv1.Ping]) error {
		got <- fmt.Sprintf("%s from %s on %s", e.Data.GetText(), e.Source, bus.Capabilities().System)
		return nil
	})
	pings.Publish(ctx, &testingv1.Ping{Text: "hello"})
	fmt.Println(<-got)
	// Output:
	// hello from //captures on loam.memory
}
