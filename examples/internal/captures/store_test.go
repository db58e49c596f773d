package captures

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/examples/internal/exampletest"
	"github.com/loamhq/loam/examples/internal/pgdb"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	"github.com/loamhq/loam/internal/testenv"
)

// postgresStore returns a PostgresStore in a schema of the test's own,
// and that schema's name and URL.
func postgresStore(t *testing.T) (_ *PostgresStore, schema, url string) {
	t.Helper()
	pool, schema, url := exampletest.PostgresPool(t, "captures")
	s, err := NewPostgresStore(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return s, schema, url
}

// TestStores holds both stores to one contract.
func TestStores(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"memory":   func(*testing.T) Store { return NewMemoryStore() },
		"postgres": func(t *testing.T) Store { s, _, _ := postgresStore(t); return s },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := open(t)
			var ids []string
			for i := range 5 {
				planter := []string{"alice", "bob"}[i%2]
				req := request(planter)
				c := &capturesv1.Capture{Id: fmt.Sprintf("cap_%d", i), PlanterId: planter, Species: req.Species,
					Location: req.Location, PhotoUrl: req.PhotoUrl, CaptureTime: req.CaptureTime}
				if err := s.Create(ctx, c, nil); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, c.Id)
			}
			got, err := s.Get(ctx, "cap_3")
			if err != nil || got.GetPlanterId() != "bob" || got.GetLocation().GetLatitude() != 52.37 || got.GetPhotoUrl() == "" {
				t.Errorf("Get(cap_3) = %v, %v; want bob's capture", got, err)
			}
			if _, err := s.Get(ctx, "cap_missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(missing) = %v, want ErrNotFound", err)
			}
			page, more, err := s.List(ctx, "", "", 2)
			if err != nil || !more || len(page) != 2 || page[0].GetId() != "cap_4" || page[1].GetId() != "cap_3" {
				t.Errorf("List(all, 2) = %v, %v, %v; want cap_4, cap_3 and more", page, more, err)
			}
			page, more, err = s.List(ctx, "alice", "cap_2", 10)
			if err != nil || more || len(page) != 1 || page[0].GetId() != "cap_0" {
				t.Errorf("List(alice after cap_2) = %v, %v, %v; want cap_0 and no more", page, more, err)
			}
			if _, _, err := s.List(ctx, "", "cap_missing", 10); !errors.Is(err, ErrNotFound) {
				t.Errorf("List(after missing) = %v, want ErrNotFound", err)
			}
			dup := &capturesv1.Capture{Id: ids[0], PlanterId: "alice", Location: &capturesv1.Location{}, CaptureTime: request("alice").CaptureTime}
			published := false
			if err := s.Create(ctx, dup, func(context.Context) error { published = true; return nil }); !errors.Is(err, ErrExists) || published {
				t.Errorf("Create(duplicate id) = %v, published %v; want ErrExists and nothing published", err, published)
			}
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.Get(ctx, "cap_1"); !errors.Is(err, context.Canceled) {
				t.Errorf("Get(cancelled) = %v, want context.Canceled", err)
			}
		})
	}
}

// TestPublishFailure holds both stores to one rule: a capture whose event
// cannot be published is not stored.
func TestPublishFailure(t *testing.T) {
	pg, _, _ := postgresStore(t)
	refuse := func(context.Context) error { return errors.New("broker refused") }
	for name, s := range map[string]Store{"memory": NewMemoryStore(), "postgres": pg} {
		c := &capturesv1.Capture{Id: "cap_" + name, PlanterId: "alice", Location: &capturesv1.Location{}, CaptureTime: request("alice").CaptureTime}
		if err := s.Create(t.Context(), c, refuse); err == nil || !strings.Contains(err.Error(), "broker refused") {
			t.Errorf("%s: Create with a failing publish = %v, want its error", name, err)
		}
		if _, err := s.Get(t.Context(), c.Id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Get after a failed publish = %v, want ErrNotFound", name, err)
		}
		if page, _, err := s.List(t.Context(), "", "", 10); err != nil || len(page) != 0 {
			t.Errorf("%s: List after a failed publish = %v, %v; want nothing", name, page, err)
		}
		if err := s.Create(t.Context(), c, nil); err != nil {
			t.Errorf("%s: Create again after a failed publish = %v, want the capture recorded", name, err)
		}
	}
}

// TestCreateCaptureThroughOutbox creates captures through the service on
// a PostgresStore and a bus on the outbox of the same database: the
// capture and its event commit together, the relay delivers the event,
// and a capture whose event cannot be written is not stored.
func TestCreateCaptureThroughOutbox(t *testing.T) {
	ctx := t.Context()
	store, schema, url := postgresStore(t)
	outbox, err := pgoutbox.New(ctx, memory.New(), pgoutbox.Config{URL: url, Schema: schema,
		Relay: pgoutbox.RelayConfig{PollInterval: 50 * time.Millisecond, LockInterval: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	bus, err := events.NewBus(outbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close(context.Background()) })
	topic, err := events.NewTopic[*capturesv1.CaptureCreated](ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	if _, err := topic.Subscribe(ctx, "test", func(_ context.Context, e *events.Event[*capturesv1.CaptureCreated]) error {
		got <- e.Data.GetCaptureId()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s := New(store, WithPublisher(topic))
	resp, err := s.CreateCapture(as("alice"), request("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if id := <-got; id != resp.GetCapture().GetId() {
		t.Errorf("relayed CaptureCreated of %s, want %s", id, resp.GetCapture().GetId())
	}
	stored, err := store.Get(ctx, resp.GetCapture().GetId())
	if err != nil || !stored.GetCaptureTime().AsTime().Equal(resp.GetCapture().GetCaptureTime().AsTime()) {
		t.Errorf("stored capture = %v, %v; want it as CreateCapture returned it", stored, err)
	}

	// The outbox's table is gone: the event cannot be written, so the
	// capture is not stored either.
	if _, err := store.pool.Exec(ctx, "DROP TABLE "+schema+".loam_outbox"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCapture(as("alice"), request("alice")); err == nil {
		t.Fatal("CreateCapture without an outbox table = nil, want an error")
	}
	page, _, err := store.List(ctx, "alice", "", 10)
	if err != nil || len(page) != 1 {
		t.Errorf("alice's captures = %d, %v; want only the first: the second rolled back", len(page), err)
	}
}

func TestConfigValidate(t *testing.T) {
	base := LocalConfig("http://127.0.0.1:9400")
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"postgres without the outbox", func(c *Config) { c.Captures.Store = "postgres" }, "captures.store: postgres keeps captures in the database of the events outbox"},
		{"the outbox over memory", func(c *Config) {
			c.Events.Outbox.Enabled, c.Events.Outbox.URL = true, "postgres://db/captures"
		}, "events.outbox.enabled: captures in memory cannot share a transaction"},
		{"an unknown store", func(c *Config) { c.Captures.Store = "sqlite" }, `captures.store: "sqlite"`},
	} {
		cfg := base
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", tc.name, err, tc.want)
		}
		// A caller that opens the store without Validate is refused too.
		if _, err := OpenStore(t.Context(), nil, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: OpenStore() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("LocalConfig().Validate() = %v", err)
	}
}

// TestPostgresCutOff cuts the database off under the service: calls fail
// with Unavailable, naming no detail of the database, and succeed again
// once it is back, with nothing half-written.
func TestPostgresCutOff(t *testing.T) {
	_, _, direct := exampletest.PostgresPool(t, "captures")
	proxy := testenv.NewProxy(t, testenv.Postgres.HostPort(t))
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = proxy.Addr()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	pool, err := pgdb.Open(t.Context(), "test", pgdb.Config{URL: u.String()}, "captures-test")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := NewPostgresStore(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	s := New(store)
	first, err := s.CreateCapture(as("alice"), request("alice"))
	if err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	ctx, cancel := context.WithTimeout(as("alice"), 10*time.Second)
	defer cancel()
	_, err = s.CreateCapture(ctx, request("alice"))
	if status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("CreateCapture with the database cut off = %v, want Unavailable without the database's detail", err)
	}
	if _, err := s.GetCapture(ctx, &capturesv1.GetCaptureRequest{Id: first.GetCapture().GetId()}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetCapture with the database cut off = %v, want Unavailable", err)
	}
	if _, err := s.ListCaptures(ctx, &capturesv1.ListCapturesRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("ListCaptures with the database cut off = %v, want Unavailable", err)
	}

	proxy.Restore()
	var second *capturesv1.CreateCaptureResponse
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if second, err = s.CreateCapture(ctx, request("alice")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("CreateCapture 10s after the database is back = %v", err)
	}
	page, err := s.ListCaptures(ctx, &capturesv1.ListCapturesRequest{})
	if err != nil || len(page.GetCaptures()) != 2 || page.GetCaptures()[0].GetId() != second.GetCapture().GetId() {
		t.Errorf("ListCaptures after the cut = %v, %v; want the first capture and the one after, nothing of the cut", page, err)
	}
}

// TestCreateCaptureIdempotent retries CreateCapture with one request_id on
// both stores: one capture, one event, the first call's answer; the same
// request_id for another capture is refused; another planter's is theirs.
func TestCreateCaptureIdempotent(t *testing.T) {
	pg, _, _ := postgresStore(t)
	for name, store := range map[string]Store{"memory": NewMemoryStore(), "postgres": pg} {
		t.Run(name, func(t *testing.T) {
			_, topic := memoryTopic(t)
			var mu sync.Mutex
			announced := map[string]int{}
			if _, err := topic.Subscribe(t.Context(), "test", func(_ context.Context, e *events.Event[*capturesv1.CaptureCreated]) error {
				mu.Lock()
				defer mu.Unlock()
				announced[e.Data.GetCaptureId()]++
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			s := New(store, WithPublisher(topic))
			req := request("alice")
			req.RequestId = "0b6f3c1e-" + name
			first, err := s.CreateCapture(as("alice"), req)
			if err != nil {
				t.Fatal(err)
			}
			again, err := s.CreateCapture(as("alice"), req)
			if err != nil || !proto.Equal(again.GetCapture(), first.GetCapture()) {
				t.Errorf("CreateCapture retried = %v, %v; want the first call's capture %v", again, err, first.GetCapture())
			}
			other := request("alice")
			other.RequestId, other.Species = req.RequestId, "Fagus sylvatica"
			if _, err := s.CreateCapture(as("alice"), other); status.Code(err) != codes.AlreadyExists {
				t.Errorf("CreateCapture(another capture, same request_id) = %v, want AlreadyExists", err)
			}
			bobs := request("bob")
			bobs.RequestId = req.RequestId
			bob, err := s.CreateCapture(as("bob"), bobs)
			if err != nil || bob.GetCapture().GetId() == first.GetCapture().GetId() {
				t.Errorf("bob's CreateCapture with alice's request_id = %v, %v; want a capture of bob's own", bob, err)
			}
			long := request("alice")
			long.RequestId = strings.Repeat("r", 129)
			if _, err := s.CreateCapture(as("alice"), long); status.Code(err) != codes.InvalidArgument {
				t.Errorf("CreateCapture(129-byte request_id) = %v, want InvalidArgument", err)
			}
			page, err := s.ListCaptures(as("alice"), &capturesv1.ListCapturesRequest{})
			if err != nil || len(page.GetCaptures()) != 1 {
				t.Errorf("alice's captures = %v, %v; want one", page, err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				mu.Lock()
				n := len(announced)
				mu.Unlock()
				if n == 2 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // room for a second announcement, were there one
			mu.Lock()
			defer mu.Unlock()
			if announced[first.GetCapture().GetId()] != 1 || announced[bob.GetCapture().GetId()] != 1 || len(announced) != 2 {
				t.Errorf("CaptureCreated announced %v, want alice's capture and bob's once each", announced)
			}
		})
	}
}
