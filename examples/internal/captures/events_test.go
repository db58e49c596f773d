package captures

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/memory"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
)

func memoryTopic(t *testing.T) (*events.Bus, *events.Topic[*capturesv1.CaptureCreated]) {
	t.Helper()
	bus, err := events.NewBus(memory.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close(context.Background()) })
	topic, err := events.NewTopic[*capturesv1.CaptureCreated](context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	return bus, topic
}

func TestCreateCapturePublishesCaptureCreated(t *testing.T) {
	_, topic := memoryTopic(t)
	got := make(chan *capturesv1.CaptureCreated, 1)
	if _, err := topic.Subscribe(context.Background(), "test", func(_ context.Context, e *events.Event[*capturesv1.CaptureCreated]) error {
		got <- e.Data
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s := New(NewMemoryStore(), WithPublisher(topic))
	resp, err := s.CreateCapture(as("alice"), request("alice"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev.GetCaptureId() != resp.GetCapture().GetId() || ev.GetPlanterId() != "alice" || ev.GetSpecies() != "Quercus robur" {
			t.Errorf("CaptureCreated = %v, want capture %s of alice", ev, resp.GetCapture().GetId())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no CaptureCreated delivered within 5s")
	}
}

func TestCreateCaptureRefusedIsNotPublished(t *testing.T) {
	_, topic := memoryTopic(t)
	got := make(chan struct{}, 1)
	if _, err := topic.Subscribe(context.Background(), "test", func(context.Context, *events.Event[*capturesv1.CaptureCreated]) error {
		got <- struct{}{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s := New(NewMemoryStore(), WithPublisher(topic))
	req := request("alice")
	req.PhotoUrl = "https://x.example/" + strings.Repeat("a", 4<<20)
	if _, err := s.CreateCapture(as("alice"), req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("CreateCapture(4 MB photo_url) = %.100v, want InvalidArgument", err)
	}
	select {
	case <-got:
		t.Error("a refused capture was published")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestCreateCapturePublishFailure(t *testing.T) {
	bus, topic := memoryTopic(t)
	if err := bus.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := New(NewMemoryStore(), WithPublisher(topic))
	_, err := s.CreateCapture(as("alice"), request("alice"))
	if err == nil || !strings.Contains(err.Error(), "publishing CaptureCreated") {
		t.Fatalf("CreateCapture() on a closed bus = %v, want an error naming the publish", err)
	}
}

// countingStore counts reads, to tell cache hits from store reads.
type countingStore struct {
	Store
	gets int
}

func (c *countingStore) Get(ctx context.Context, id string) (*capturesv1.Capture, error) {
	c.gets++
	return c.Store.Get(ctx, id)
}

func TestGetCaptureThroughCache(t *testing.T) {
	ctx := context.Background()
	cs, err := cache.Open(ctx, cache.Config{TTL: time.Minute, NegativeTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	byID, err := cache.New[string, *capturesv1.Capture](cs, "captures.by_id")
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: NewMemoryStore()}
	s := New(store, WithCache(byID))
	created, err := s.CreateCapture(as("alice"), request("alice"))
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetCapture().GetId()
	for range 3 {
		got, err := s.GetCapture(as("alice"), &capturesv1.GetCaptureRequest{Id: id})
		if err != nil || got.GetCapture().GetId() != id {
			t.Fatalf("GetCapture(%s) = %v, %v", id, got, err)
		}
	}
	if store.gets != 1 {
		t.Errorf("store read %d times for 3 GetCapture calls, want 1", store.gets)
	}
	// The owner check runs on cached captures too.
	if _, err := s.GetCapture(as("bob"), &capturesv1.GetCaptureRequest{Id: id}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetCapture(alice's capture) as bob = %v, want PermissionDenied", err)
	}
	// A missing id is NotFound, and remembered.
	for range 2 {
		if _, err := s.GetCapture(asRole("root", "admin"), &capturesv1.GetCaptureRequest{Id: "cap_missing"}); status.Code(err) != codes.NotFound {
			t.Errorf("GetCapture(missing) = %v, want NotFound", err)
		}
	}
	if store.gets != 2 {
		t.Errorf("store read %d times after two reads of a missing id, want 2", store.gets)
	}
	if _, err := s.GetCapture(as("alice"), &capturesv1.GetCaptureRequest{Id: strings.Repeat("x", 129)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetCapture(129-byte id) = %v, want InvalidArgument", err)
	}
}
