package events_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"google.golang.org/protobuf/proto"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// TestCloudEventsSDKReadsLoamEvents hands what Loam publishes to the
// CloudEvents Go SDK, through its binary-mode reader of ce- headers.
func TestCloudEventsSDKReadsLoamEvents(t *testing.T) {
	ctx := context.Background()
	broker := memory.New()
	bus := newBus(t, broker, events.WithSource("//orders"))
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := broker.OpenSubscription(ctx, topic.Name(), driver.SubscriptionConfig{Name: "sdk"})
	if err != nil {
		t.Fatal(err)
	}
	// Values are ASCII here: the SDK (v2.16) does not undo the
	// percent-encoding that the bindings require for other characters.
	sent := &testingv1.OrderPlaced{OrderId: "o-1", Seq: 3, Note: []byte{0xff}}
	at := time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC)
	if err := topic.Publish(ctx, sent, events.WithID("evt-1"), events.WithSubject("orders/o-1"),
		events.WithTime(at), events.WithExtension("tenant", "acme")); err != nil {
		t.Fatal(err)
	}
	ms, err := raw.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	header := http.Header{}
	for k, v := range ms[0].Header {
		header.Set(k, v)
	}
	e, err := binding.ToEvent(ctx, cehttp.NewMessage(header, io.NopCloser(bytes.NewReader(ms[0].Body))))
	if err != nil {
		t.Fatalf("the CloudEvents SDK cannot read the event: %v", err)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("the CloudEvents SDK finds the event invalid: %v", err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"specversion", e.SpecVersion(), "1.0"},
		{"id", e.ID(), "evt-1"},
		{"source", e.Source(), "//orders"},
		{"type", e.Type(), "org.loam.testing.v1.order_placed"},
		{"subject", e.Subject(), "orders/o-1"},
		{"datacontenttype", e.DataContentType(), "application/protobuf"},
		{"dataschema", e.DataSchema(), "https://type.googleapis.com/loam.testing.v1.OrderPlaced"},
		{"partitionkey", extension(e, "partitionkey"), "o-1"},
		{"tenant", extension(e, "tenant"), "acme"},
	} {
		if c.got != c.want {
			t.Errorf("SDK reads %s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if !e.Time().Equal(at) {
		t.Errorf("SDK reads time %v, want %v", e.Time(), at)
	}
	var got testingv1.OrderPlaced
	if err := proto.Unmarshal(e.Data(), &got); err != nil || !proto.Equal(&got, sent) {
		t.Errorf("SDK reads data %v (%v), want %v", &got, err, sent)
	}
}

func extension(e *cloudevents.Event, name string) string {
	v, _ := e.Extensions()[name].(string)
	return v
}

// TestLoamReadsCloudEventsSDKEvents consumes an event that the CloudEvents
// Go SDK wrote in binary mode, with JSON data, as a producer in another
// language would.
func TestLoamReadsCloudEventsSDKEvents(t *testing.T) {
	ctx := context.Background()
	e := cloudevents.NewEvent()
	e.SetID("sdk-1")
	e.SetSource("https://example.com/shop")
	e.SetType("org.loam.testing.v1.order_placed")
	e.SetSubject("naïve subject")
	e.SetTime(time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC))
	e.SetExtension("partitionkey", "o-7")
	if err := e.SetData("application/json", map[string]any{"orderId": "o-7", "seq": "2"}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://x", nil)
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	header := map[string]string{}
	for k, vs := range req.Header {
		header[strings.ToLower(k)] = vs[0]
	}

	broker := memory.New()
	bus := newBus(t, broker)
	topic, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *events.Event[*testingv1.OrderPlaced], 1)
	if _, err := topic.Subscribe(ctx, "loam", func(ctx context.Context, e *events.Event[*testingv1.OrderPlaced]) error {
		got <- e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	dt, err := broker.OpenTopic(ctx, topic.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := dt.Send(ctx, []*driver.Message{{ID: "sdk-1", Header: header, Body: body}}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		want := &testingv1.OrderPlaced{OrderId: "o-7", Seq: 2}
		if !proto.Equal(ev.Data, want) || ev.ID != "sdk-1" || ev.Source != "https://example.com/shop" || ev.Subject != "naïve subject" || ev.Key != "o-7" {
			t.Errorf("Loam reads %v id %q source %q subject %q key %q; want %v sdk-1 https://example.com/shop, naïve subject, o-7",
				ev.Data, ev.ID, ev.Source, ev.Subject, ev.Key, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the SDK's event was not handled (dead-lettered as malformed?)")
	}
}
