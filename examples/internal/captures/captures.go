// Package captures implements the captures example service: tree planters
// record captures (a photographed, located tree), and the service stores and
// lists them. It is written as a team would write a service on Loam: the
// access rules live in the proto, the handlers hold only the decisions that
// depend on data (whose capture this is), through authz.Check.
package captures

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
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

// Service implements captures.v1.CaptureService.
type Service struct {
	capturesv1.UnimplementedCaptureServiceServer
	store Store
	now   func() time.Time
}

// New returns a Service that keeps captures in store.
func New(store Store) *Service {
	return &Service{store: store, now: time.Now}
}

// CreateCapture records a capture. The access rule (captures.create, and
// the condition that the planter is the caller) is enforced before this
// runs; here the request's content is checked.
func (s *Service) CreateCapture(ctx context.Context, req *capturesv1.CreateCaptureRequest) (*capturesv1.CreateCaptureResponse, error) {
	if err := s.validate(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c := &capturesv1.Capture{
		Id:          newID(),
		PlanterId:   req.GetPlanterId(),
		Species:     req.GetSpecies(),
		Location:    req.GetLocation(),
		PhotoUrl:    req.GetPhotoUrl(),
		CaptureTime: req.GetCaptureTime(),
	}
	if err := s.store.Create(ctx, c); err != nil {
		return nil, storeError(err)
	}
	return &capturesv1.CreateCaptureResponse{Capture: c}, nil
}

// GetCapture returns a capture: any capture to a caller with ReadAll, the
// caller's own to anyone else.
func (s *Service) GetCapture(ctx context.Context, req *capturesv1.GetCaptureRequest) (*capturesv1.GetCaptureResponse, error) {
	c, err := s.store.Get(ctx, req.GetId())
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
	if req.GetPlanterId() == "" {
		errs = append(errs, errors.New("planter_id: required"))
	}
	if req.GetSpecies() == "" {
		errs = append(errs, errors.New("species: required"))
	}
	if loc := req.GetLocation(); loc == nil {
		errs = append(errs, errors.New("location: required"))
	} else if lat, lng := loc.GetLatitude(), loc.GetLongitude(); lat < -90 || lat > 90 || lng < -180 || lng > 180 {
		errs = append(errs, fmt.Errorf("location: (%v, %v) is not a point on Earth", lat, lng))
	}
	if u, err := url.Parse(req.GetPhotoUrl()); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("photo_url: %q is not an http or https URL", req.GetPhotoUrl()))
	}
	switch t := req.GetCaptureTime(); {
	case t == nil:
		errs = append(errs, errors.New("capture_time: required"))
	case t.AsTime().After(s.now().Add(5 * time.Minute)):
		errs = append(errs, fmt.Errorf("capture_time: %s is in the future", t.AsTime().Format(time.RFC3339)))
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
	}
	return err // logged and hidden by the service's recovery layer
}

func decodeToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	return string(b), err
}

func newID() string { return "cap_" + rand.Text()[:16] }
