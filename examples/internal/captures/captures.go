// Package captures implements the captures example service: tree planters
// record captures (a photographed, located tree), and the service stores and
// lists them. It is written as a team would write a service on Loam: the
// access rules live in the proto, the handlers hold only the decisions that
// depend on data (whose capture this is), through authz.Check.
package captures

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/examples/internal/pgdb"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
)

// ReadAll is the permission to read every planter's captures; without it
// a caller reads only their own. Handlers check it with authz.Check.
const ReadAll = "captures.read_all"

// Page sizes of ListCaptures.
const (
	defaultPageSize = 20
	maxPageSize     = 100
)

// Longest accepted string fields, in bytes. Longer values are refused, so
// that one request cannot store megabytes that every later listing carries.
const (
	maxIDLen        = 128
	maxSpeciesLen   = 200
	maxPhotoURLLen  = 2048
	maxPageTokenLen = 256
)

// Service implements captures.v1.CaptureService.
type Service struct {
	capturesv1.UnimplementedCaptureServiceServer
	store   Store
	created *events.Topic[*capturesv1.CaptureCreated]
	byID    *cache.Cache[string, *capturesv1.Capture]
	now     func() time.Time
}

// Option configures a Service.
type Option func(*Service)

// WithPublisher makes CreateCapture publish a CaptureCreated event on t
// for each capture it stores, in the capture's transaction when the store
// has transactions (PostgresStore), after storing it otherwise.
func WithPublisher(t *events.Topic[*capturesv1.CaptureCreated]) Option {
	return func(s *Service) { s.created = t }
}

// WithCache makes GetCapture read captures through c, keyed by id.
// Captures never change once recorded, so entries need no invalidation.
func WithCache(c *cache.Cache[string, *capturesv1.Capture]) Option {
	return func(s *Service) { s.byID = c }
}

// New returns a Service that keeps captures in store.
func New(store Store, opts ...Option) *Service {
	s := &Service{store: store, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// CreateCapture records a capture. The access rule (captures.create, and
// the condition that the planter is the caller) is enforced before this
// runs; here the request's content is checked.
func (s *Service) CreateCapture(ctx context.Context, req *capturesv1.CreateCaptureRequest) (*capturesv1.CreateCaptureResponse, error) {
	if err := s.validate(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c := &capturesv1.Capture{
		Id:        captureID(req),
		PlanterId: req.GetPlanterId(),
		Species:   req.GetSpecies(),
		Location:  req.GetLocation(),
		PhotoUrl:  req.GetPhotoUrl(),
		// Kept to the microsecond, as PostgreSQL keeps it, so that a
		// capture reads back as it was returned.
		CaptureTime: timestamppb.New(req.GetCaptureTime().AsTime().Truncate(time.Microsecond)),
	}
	// The store runs publish in the capture's transaction when it has
	// one: on the outbox, the capture and its event commit together.
	publish := func(ctx context.Context) error {
		if s.created == nil {
			return nil
		}
		ev := &capturesv1.CaptureCreated{
			CaptureId:   c.GetId(),
			PlanterId:   c.GetPlanterId(),
			Species:     c.GetSpecies(),
			CaptureTime: c.GetCaptureTime(),
		}
		if err := s.created.Publish(ctx, ev); err != nil {
			return fmt.Errorf("publishing CaptureCreated: %w", err)
		}
		return nil
	}
	err := s.store.Create(ctx, c, publish)
	if errors.Is(err, ErrExists) && req.GetRequestId() != "" {
		return s.retried(ctx, c)
	}
	if err != nil {
		return nil, storeError(err)
	}
	return &capturesv1.CreateCaptureResponse{Capture: c}, nil
}

// retried answers a CreateCapture whose request_id an earlier call used:
// with the capture that call recorded, when it is the same capture.
func (s *Service) retried(ctx context.Context, c *capturesv1.Capture) (*capturesv1.CreateCaptureResponse, error) {
	first, err := s.store.Get(ctx, c.GetId())
	if err != nil {
		return nil, storeError(err)
	}
	if !proto.Equal(first, c) {
		return nil, status.Error(codes.AlreadyExists, "request_id: already used for another capture")
	}
	return &capturesv1.CreateCaptureResponse{Capture: first}, nil
}

// GetCapture returns a capture: any capture to a caller with ReadAll, the
// caller's own to anyone else.
func (s *Service) GetCapture(ctx context.Context, req *capturesv1.GetCaptureRequest) (*capturesv1.GetCaptureResponse, error) {
	if len(req.GetId()) > maxIDLen {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("id: longer than %d bytes", maxIDLen))
	}
	c, err := s.get(ctx, req.GetId())
	if errors.Is(err, ErrNotFound) {
		// Whether an id exists is only for callers who may read every
		// capture: anyone else gets the refusal of someone else's.
		if err := authz.Check(ctx, ReadAll); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, storeError(err)
	}
	if err := mayRead(ctx, c.GetPlanterId()); err != nil {
		return nil, err
	}
	return &capturesv1.GetCaptureResponse{Capture: c}, nil
}

// ListCaptures lists captures newest first: every planter's, or one
// planter's, to a caller with ReadAll; the caller's own to anyone else.
func (s *Service) ListCaptures(ctx context.Context, req *capturesv1.ListCapturesRequest) (*capturesv1.ListCapturesResponse, error) {
	if len(req.GetPlanterId()) > maxIDLen {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("planter_id: longer than %d bytes", maxIDLen))
	}
	if len(req.GetPageToken()) > maxPageTokenLen {
		return nil, status.Error(codes.InvalidArgument, "page_token: not a token this service returned")
	}
	planter := req.GetPlanterId()
	if authz.Check(ctx, ReadAll) != nil {
		p, _ := authn.FromContext(ctx)
		if planter == "" {
			planter = p.Subject()
		}
		if err := mayRead(ctx, planter); err != nil {
			return nil, err
		}
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size: must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "page_token: not a token this service returned")
	}
	page, more, err := s.store.List(ctx, planter, after, size)
	if err != nil {
		return nil, storeError(err)
	}
	resp := &capturesv1.ListCapturesResponse{Captures: page}
	if more && len(page) > 0 {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].GetId()))
	}
	return resp, nil
}

// get reads a capture, through the cache when there is one.
func (s *Service) get(ctx context.Context, id string) (*capturesv1.Capture, error) {
	if s.byID == nil {
		return s.store.Get(ctx, id)
	}
	c, err := s.byID.GetOrLoad(ctx, id, func(ctx context.Context, id string) (*capturesv1.Capture, error) {
		c, err := s.store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil, cache.ErrNotFound
		}
		return c, err
	})
	if errors.Is(err, cache.ErrNotFound) {
		return nil, ErrNotFound
	}
	return c, err
}

// mayRead allows reading a planter's captures to that planter and to
// callers with ReadAll.
func mayRead(ctx context.Context, planterID string) error {
	if p, ok := authn.FromContext(ctx); ok && p.Subject() == planterID {
		return nil
	}
	return authz.Check(ctx, ReadAll)
}

func (s *Service) validate(req *capturesv1.CreateCaptureRequest) error {
	var errs []error
	switch n := len(req.GetPlanterId()); {
	case n == 0:
		errs = append(errs, errors.New("planter_id: required"))
	case n > maxIDLen:
		errs = append(errs, fmt.Errorf("planter_id: longer than %d bytes", maxIDLen))
	}
	switch n := len(req.GetSpecies()); {
	case n == 0:
		errs = append(errs, errors.New("species: required"))
	case n > maxSpeciesLen:
		errs = append(errs, fmt.Errorf("species: longer than %d bytes", maxSpeciesLen))
	}
	if loc := req.GetLocation(); loc == nil {
		errs = append(errs, errors.New("location: required"))
	} else if lat, lng := loc.GetLatitude(), loc.GetLongitude(); lat < -90 || lat > 90 || lng < -180 || lng > 180 {
		errs = append(errs, errors.New("location: latitude must lie in [-90, 90] and longitude in [-180, 180]"))
	}
	if len(req.GetRequestId()) > maxIDLen {
		errs = append(errs, fmt.Errorf("request_id: longer than %d bytes", maxIDLen))
	}
	if len(req.GetPhotoUrl()) > maxPhotoURLLen {
		errs = append(errs, fmt.Errorf("photo_url: longer than %d bytes", maxPhotoURLLen))
	} else if u, err := url.Parse(req.GetPhotoUrl()); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, errors.New("photo_url: not an http or https URL"))
	}
	switch t := req.GetCaptureTime(); {
	case t == nil:
		errs = append(errs, errors.New("capture_time: required"))
	case t.AsTime().After(s.now().Add(5 * time.Minute)):
		errs = append(errs, errors.New("capture_time: in the future"))
	}
	return errors.Join(errs...)
}

// storeError maps a store error to the status the client sees.
func storeError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, "capture not found")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, pgdb.ErrUnavailable):
		// The detail is the database's: it stays in the log and the span.
		return status.Error(codes.Unavailable, "captures storage unavailable; try again")
	}
	return err // logged and hidden by the service's recovery layer
}

func decodeToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	return string(b), err
}

// captureID is a new capture's id: random, or, for a request with a
// request_id, derived from it and the planter, so that a retry finds the
// capture of the first call.
func captureID(req *capturesv1.CreateCaptureRequest) string {
	if req.GetRequestId() == "" {
		return "cap_" + rand.Text()[:16]
	}
	sum := sha256.Sum256([]byte(req.GetPlanterId() + "\x00" + req.GetRequestId()))
	return "cap_" + base32.StdEncoding.EncodeToString(sum[:])[:16]
}
