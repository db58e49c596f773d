package events_test

import (
	"context"
	"time"

	"github.com/loamhq/loam/events/driver"
)

// fakeBroker is a driver.Broker whose behaviour each test sets with
// function fields; a nil field falls back to the wrapped Broker.
type fakeBroker struct {
	driver.Broker
	openTopic        func(ctx context.Context, name string) (driver.Topic, error)
	openSubscription func(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error)
	caps             *driver.Capabilities
}

func (b *fakeBroker) OpenTopic(ctx context.Context, name string) (driver.Topic, error) {
	if b.openTopic != nil {
		return b.openTopic(ctx, name)
	}
	return b.Broker.OpenTopic(ctx, name)
}

func (b *fakeBroker) OpenSubscription(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
	if b.openSubscription != nil {
		return b.openSubscription(ctx, topic, cfg)
	}
	return b.Broker.OpenSubscription(ctx, topic, cfg)
}

func (b *fakeBroker) Capabilities() driver.Capabilities {
	if b.caps != nil {
		return *b.caps
	}
	return b.Broker.Capabilities()
}

// fakeTopic is a driver.Topic with function fields.
type fakeTopic struct {
	driver.Topic
	send        func(ctx context.Context, ms []*driver.Message) error
	isRetryable func(error) bool
}

func (t *fakeTopic) Send(ctx context.Context, ms []*driver.Message) error {
	if t.send != nil {
		return t.send(ctx, ms)
	}
	return t.Topic.Send(ctx, ms)
}

func (t *fakeTopic) IsRetryable(err error) bool {
	if t.isRetryable != nil {
		return t.isRetryable(err)
	}
	return false
}

func (t *fakeTopic) Close() error {
	if t.Topic != nil {
		return t.Topic.Close()
	}
	return nil
}

// fakeSubscription is a driver.Subscription with function fields.
type fakeSubscription struct {
	driver.Subscription
	receive     func(ctx context.Context, max int) ([]*driver.Message, error)
	nack        func(ctx context.Context, m *driver.Message, delay time.Duration) error
	ack         func(ctx context.Context, m *driver.Message) error
	term        func(ctx context.Context, m *driver.Message) error
	isRetryable func(error) bool
}

func (s *fakeSubscription) Receive(ctx context.Context, max int) ([]*driver.Message, error) {
	if s.receive != nil {
		return s.receive(ctx, max)
	}
	return s.Subscription.Receive(ctx, max)
}

func (s *fakeSubscription) Ack(ctx context.Context, m *driver.Message) error {
	if s.ack != nil {
		return s.ack(ctx, m)
	}
	return s.Subscription.Ack(ctx, m)
}

func (s *fakeSubscription) Nack(ctx context.Context, m *driver.Message, delay time.Duration) error {
	if s.nack != nil {
		return s.nack(ctx, m, delay)
	}
	return s.Subscription.Nack(ctx, m, delay)
}

func (s *fakeSubscription) Term(ctx context.Context, m *driver.Message) error {
	if s.term != nil {
		return s.term(ctx, m)
	}
	return s.Subscription.Term(ctx, m)
}

func (s *fakeSubscription) IsRetryable(err error) bool {
	if s.isRetryable != nil {
		return s.isRetryable(err)
	}
	return s.Subscription.IsRetryable(err)
}

func (s *fakeSubscription) Close() error {
	if s.Subscription != nil {
		return s.Subscription.Close()
	}
	return nil
}
