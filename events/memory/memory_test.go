package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
)

func open(t *testing.T, b *memory.Broker, maxAttempts int) (driver.Topic, driver.Subscription) {
	t.Helper()
	ctx := context.Background()
	sub, err := b.OpenSubscription(ctx, "t", driver.SubscriptionConfig{Name: "s", MaxAttempts: maxAttempts})
	if err != nil {
		t.Fatal(err)
	}
	topic, err := b.OpenTopic(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	return topic, sub
}

func receive(t *testing.T, sub driver.Subscription) (*driver.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ms, err := sub.Receive(ctx, 1)
	if err != nil {
		return nil, err
	}
	return ms[0], nil
}

// TestDeliveryLimit drops a message delivered MaxAttempts+1 times, as
// brokers with a delivery limit do.
func TestDeliveryLimit(t *testing.T) {
	b := memory.New()
	topic, sub := open(t, b, 2)
	ctx := context.Background()
	topic.Send(ctx, []*driver.Message{{ID: "m"}})
	for attempt := 1; attempt <= 3; attempt++ {
		m, err := receive(t, sub)
		if err != nil || m.Attempt != attempt {
			t.Fatalf("delivery %d: %v, %v", attempt, m, err)
		}
		sub.Nack(ctx, m, 0)
	}
	if m, err := receive(t, sub); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a fourth delivery with MaxAttempts 2: %v, %v; want none", m, err)
	}
}

// TestCloseHandsBackHeldMessages returns what a closed subscriber held to
// the next one.
func TestCloseHandsBackHeldMessages(t *testing.T) {
	b := memory.New()
	topic, sub := open(t, b, 5)
	ctx := context.Background()
	topic.Send(ctx, []*driver.Message{{ID: "m"}})
	m, err := receive(t, sub)
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	if err := sub.Ack(ctx, m); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Ack after Close = %v, want ErrClosed", err)
	}
	_, sub2 := open(t, b, 5)
	if m, err := receive(t, sub2); err != nil || m.ID != "m" || m.Attempt != 2 {
		t.Errorf("the next subscriber got %v, %v; want m at attempt 2", m, err)
	}
}

// TestBrokerClose ends a blocked Receive and fails everything after.
func TestBrokerClose(t *testing.T) {
	b := memory.New()
	topic, sub := open(t, b, 5)
	ctx := context.Background()
	errc := make(chan error)
	go func() {
		_, err := sub.Receive(ctx, 1)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, driver.ErrClosed) {
		t.Errorf("blocked Receive after Broker.Close = %v, want ErrClosed", err)
	}
	if err := topic.Send(ctx, []*driver.Message{{ID: "x"}}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Send after Broker.Close = %v, want ErrClosed", err)
	}
	if _, err := b.OpenSubscription(ctx, "t", driver.SubscriptionConfig{Name: "s"}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("OpenSubscription after Broker.Close = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestSentMessagesAreCopies keeps what a subscriber receives from changing
// when the sender reuses its message.
func TestSentMessagesAreCopies(t *testing.T) {
	b := memory.New()
	topic, sub := open(t, b, 5)
	m := &driver.Message{ID: "m", Header: map[string]string{"k": "v"}, Body: []byte("body")}
	topic.Send(context.Background(), []*driver.Message{m})
	m.Header["k"], m.Body[0] = "changed", 'X'
	got, err := receive(t, sub)
	if err != nil || got.Header["k"] != "v" || string(got.Body) != "body" {
		t.Errorf("received %v, %v; want the message as sent", got, err)
	}
}
