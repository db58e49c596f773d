package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/loamhq/loam/events"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// TestEventsWiring: the events section opens the server's Bus (in memory
// by default); an event published from a handler reaches a subscription,
// and the drain waits for the handler that is running.
func TestEventsWiring(t *testing.T) {
	r := start(t, testConfig(), stub())
	topic, err := events.NewTopic[*testingv1.OrderPlaced](t.Context(), r.srv.Bus())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *events.Event[*testingv1.OrderPlaced], 1)
	release := make(chan struct{})
	if _, err := topic.Subscribe(t.Context(), "billing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		got <- e
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(t.Context(), &testingv1.OrderPlaced{OrderId: "o-1"}); err != nil {
		t.Fatal(err)
	}
	var e *events.Event[*testingv1.OrderPlaced]
	select {
	case e = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the event did not arrive")
	}
	if e.Data.GetOrderId() != "o-1" || e.Source != "//stub" {
		t.Errorf("event = %v from %q, want order o-1 from //stub", e.Data, e.Source)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- r.srv.Shutdown(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v while a handler ran", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if err := topic.Publish(t.Context(), &testingv1.OrderPlaced{OrderId: "o-2"}); !errors.Is(err, events.ErrClosed) {
		t.Errorf("Publish after Shutdown = %v, want ErrClosed", err)
	}
}
