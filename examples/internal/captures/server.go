package captures

import (
	"context"
	"fmt"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	"github.com/loamhq/loam/service"
)

// Config is the captures service's configuration: Loam's standard
// sections, and nothing of its own yet (storage is in memory).
type Config struct {
	service.Config
}

// Audience is the audience the service's tokens must name.
const Audience = "captures-api"

// Roles is the role policy of the example: planters record and read their
// own captures; admins read everyone's.
func Roles() map[string][]string {
	return map[string][]string{
		"planter": {"captures.create", "captures.read"},
		"admin":   {"captures.read", ReadAll},
	}
}

// NewServer assembles the captures service on Loam: the server from cfg,
// with the service registered on a store in memory. The caller serves it.
func NewServer(ctx context.Context, cfg Config, opts ...service.Option) (*service.Server, error) {
	srv, err := service.New(ctx, cfg.Config, opts...)
	if err != nil {
		return nil, err
	}
	if err := Register(ctx, srv); err != nil {
		srv.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	return srv, nil
}

// Register registers the captures service on srv, over a store in memory:
// CaptureCreated is published on srv.Bus(), GetCapture is cached in
// srv.Cache().
func Register(ctx context.Context, srv *service.Server) error {
	created, err := events.NewTopic[*capturesv1.CaptureCreated](ctx, srv.Bus())
	if err != nil {
		return fmt.Errorf("captures: CaptureCreated topic: %w", err)
	}
	byID, err := cache.New[string, *capturesv1.Capture](srv.Cache(), "captures.by_id")
	if err != nil {
		return fmt.Errorf("captures: capture cache: %w", err)
	}
	capturesv1.RegisterCaptureServiceServer(srv, New(NewMemoryStore(), WithPublisher(created), WithCache(byID)))
	return nil
}

// LocalConfig is the configuration of a captures service on loopback that
// trusts the development issuer at issuerURL: what the demo runs.
func LocalConfig(issuerURL string) Config {
	var cfg Config
	cfg.Service = service.Settings{
		Name:            "captures",
		Version:         "dev",
		Environment:     "development",
		ListenAddr:      "127.0.0.1:0",
		AdminAddr:       "127.0.0.1:0",
		ShutdownTimeout: 5 * time.Second,
	}
	cfg.Authn = authn.Config{
		Issuers:                []authn.IssuerConfig{{URL: issuerURL, Audiences: []string{Audience}}},
		Leeway:                 30 * time.Second,
		RequireAccessTokenType: true,
	}
	cfg.Authz = authz.Config{Roles: Roles(), HandlerPermissions: []string{ReadAll}}
	return cfg
}
