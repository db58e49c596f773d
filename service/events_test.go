package service_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/internal/testenv"
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

// TestEventsRedisDedup: with events.dedup.store redis, two replicas of a
// service share what they processed. An event ID that replica A handled is
// not handled again when it reaches replica B (a redelivery to another
// replica, or a producer that published it twice).
func TestEventsRedisDedup(t *testing.T) {
	b := make([]byte, 6)
	rand.Read(b)
	cfg := testConfig()
	cfg.Cache = cache.Config{
		Namespace: "loamtest-" + hex.EncodeToString(b),
		Redis:     cache.RedisConfig{Addresses: []string{testenv.Redis.HostPort(t)}},
	}
	cfg.Events.Dedup.Store = "redis"
	handled := make(chan string, 16)
	subscribe := func(name string) *events.Topic[*testingv1.OrderPlaced] {
		r := start(t, cfg, stub())
		topic, err := events.NewTopic[*testingv1.OrderPlaced](t.Context(), r.srv.Bus())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := topic.Subscribe(t.Context(), "billing", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
			handled <- name + " " + e.ID
			return nil
		}, events.WithConcurrency(1)); err != nil {
			t.Fatal(err)
		}
		return topic
	}
	a, bb := subscribe("A"), subscribe("B")
	next := func() string {
		t.Helper()
		select {
		case h := <-handled:
			return h
		case <-time.After(5 * time.Second):
			t.Fatal("no event was handled within 5s")
			return ""
		}
	}
	if err := a.Publish(t.Context(), &testingv1.OrderPlaced{OrderId: "o-1"}, events.WithID("evt-1")); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "A evt-1" {
		t.Fatalf("handled %q, want A evt-1", got)
	}
	// The same ID reaches replica B, then a new one: B skips the first.
	for _, id := range []string{"evt-1", "evt-2"} {
		if err := bb.Publish(t.Context(), &testingv1.OrderPlaced{OrderId: "o-1"}, events.WithID(id)); err != nil {
			t.Fatal(err)
		}
	}
	if got := next(); got != "B evt-2" {
		t.Fatalf("handled %q, want B evt-2: replica B handled an event replica A had processed", got)
	}
}
