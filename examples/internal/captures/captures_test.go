package captures

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
)

// authorizer is the example's policy over its contract, as the server
// builds it.
var authorizer = sync.OnceValues(func() (*authz.Authorizer, error) {
	srv := grpc.NewServer()
	capturesv1.RegisterCaptureServiceServer(srv, New(NewMemoryStore()))
	return authz.New(authz.Config{Roles: Roles(), HandlerPermissions: []string{ReadAll}}, srv.GetServiceInfo(), authz.WithLogger(slog.New(slog.DiscardHandler)))
})

// as returns the context a handler sees for a planter's call, as the
// server's interceptors make it.
func as(subject string) context.Context { return asRole(subject, "planter") }

func asRole(subject, role string) context.Context {
	a, err := authorizer()
	if err != nil {
		panic(err)
	}
	ctx := authn.NewContext(context.Background(), authn.NewPrincipal(authn.Identity{Subject: subject, Roles: []string{role}}))
	return authz.NewContext(ctx, a)
}

func request(planter string) *capturesv1.CreateCaptureRequest {
	return &capturesv1.CreateCaptureRequest{
		PlanterId:   planter,
		Species:     "Quercus robur",
		Location:    &capturesv1.Location{Latitude: 52.37, Longitude: 4.89},
		PhotoUrl:    "https://photos.example.org/q.jpg",
		CaptureTime: timestamppb.New(time.Now().Add(-time.Hour)),
	}
}

func TestCreateCaptureValidation(t *testing.T) {
	s := New(NewMemoryStore())
	tests := []struct {
		name   string
		mutate func(*capturesv1.CreateCaptureRequest)
		want   string
	}{
		{"no species", func(r *capturesv1.CreateCaptureRequest) { r.Species = "" }, "species: required"},
		{"no location", func(r *capturesv1.CreateCaptureRequest) { r.Location = nil }, "location: required"},
		{"off the planet", func(r *capturesv1.CreateCaptureRequest) { r.Location.Latitude = 91 }, "location: latitude must lie in [-90, 90]"},
		{"bad photo url", func(r *capturesv1.CreateCaptureRequest) { r.PhotoUrl = "ftp://x/y" }, "photo_url: not an http or https URL"},
		{"oversized photo url", func(r *capturesv1.CreateCaptureRequest) {
			r.PhotoUrl = "https://photos.example.org/" + strings.Repeat("a", 4<<20)
		}, "photo_url: longer than 2048 bytes"},
		{"oversized species", func(r *capturesv1.CreateCaptureRequest) { r.Species = strings.Repeat("s", 201) }, "species: longer than 200 bytes"},
		{"oversized planter", func(r *capturesv1.CreateCaptureRequest) { r.PlanterId = strings.Repeat("p", 129) }, "planter_id: longer than 128 bytes"},
		{"future", func(r *capturesv1.CreateCaptureRequest) { r.CaptureTime = timestamppb.New(time.Now().Add(time.Hour)) }, "capture_time: in the future"},
		{"everything at once", func(r *capturesv1.CreateCaptureRequest) { r.Species, r.CaptureTime = "", nil }, "species: required\ncapture_time: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request("alice")
			tt.mutate(req)
			_, err := s.CreateCapture(as("alice"), req)
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, tt.want) {
				t.Errorf("CreateCapture() = %.200v, want InvalidArgument containing %q", err, tt.want)
			}
			if len(msg) > 500 || strings.Contains(msg, "ftp://") || strings.Contains(msg, "aaaa") {
				t.Errorf("CreateCapture() error echoes the input: %.200q", msg)
			}
		})
	}
}

func TestListCapturesPages(t *testing.T) {
	s := New(NewMemoryStore())
	for i := range 5 {
		for _, planter := range []string{"alice", "bob"} {
			req := request(planter)
			req.Species = fmt.Sprint("species-", i)
			if _, err := s.CreateCapture(as(planter), req); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Without captures.read_all, alice reads her own captures only, newest
	// first, two at a time.
	var got []string
	token := ""
	for range 5 {
		resp, err := s.ListCaptures(as("alice"), &capturesv1.ListCapturesRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetCaptures() {
			if c.GetPlanterId() != "alice" {
				t.Fatalf("alice listed %s's capture", c.GetPlanterId())
			}
			got = append(got, c.GetSpecies())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := "species-4 species-3 species-2 species-1 species-0"; strings.Join(got, " ") != want {
		t.Errorf("pages = %v, want %s", got, want)
	}

	for name, req := range map[string]*capturesv1.ListCapturesRequest{
		"another planter's": {PlanterId: "bob"},
		"bad token":         {PageToken: "%%%"},
		"negative size":     {PageSize: -1},
	} {
		_, err := s.ListCaptures(as("alice"), req)
		want := codes.InvalidArgument
		if name == "another planter's" {
			want = codes.PermissionDenied
		}
		if status.Code(err) != want {
			t.Errorf("ListCaptures(%s) = %v, want %v", name, err, want)
		}
	}
}

func TestGetCapture(t *testing.T) {
	s := New(NewMemoryStore())
	resp, err := s.CreateCapture(as("bob"), request("bob"))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	if _, err := s.GetCapture(as("bob"), &capturesv1.GetCaptureRequest{Id: id}); err != nil {
		t.Errorf("bob reading his capture = %v", err)
	}
	if _, err := s.GetCapture(as("alice"), &capturesv1.GetCaptureRequest{Id: id}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice reading bob's capture = %v, want PermissionDenied", err)
	}
	// Authorization comes before the answer reveals whether an id exists:
	// to a planter an unknown id is refused as someone else's capture is;
	// only a caller who may read every capture learns that it is missing.
	_, other := s.GetCapture(as("alice"), &capturesv1.GetCaptureRequest{Id: id})
	_, unknown := s.GetCapture(as("alice"), &capturesv1.GetCaptureRequest{Id: "cap_nope"})
	if status.Code(unknown) != codes.PermissionDenied || status.Convert(unknown).Message() != status.Convert(other).Message() {
		t.Errorf("a planter reading an unknown id = %v, want the answer to someone else's capture, %v", unknown, other)
	}
	if _, err := s.GetCapture(asRole("root", "admin"), &capturesv1.GetCaptureRequest{Id: "cap_nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("an admin reading an unknown id = %v, want NotFound", err)
	}
	ctx, cancel := context.WithCancel(as("bob"))
	cancel()
	if _, err := s.GetCapture(ctx, &capturesv1.GetCaptureRequest{Id: id}); status.Code(err) != codes.Canceled {
		t.Errorf("cancelled context = %v, want Canceled", err)
	}
}
