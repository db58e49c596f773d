package impact

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
	"github.com/loamhq/loam/service"
)

// Config is the impact service's configuration: Loam's standard sections,
// and nothing of its own (the aggregate is in memory).
type Config struct {
	service.Config
}

// Audience is the audience the service's tokens must name.
const Audience = "impact-api"

// Roles is the role policy of the example: planters and admins read impact.
func Roles() map[string][]string {
	return map[string][]string{
		"planter": {"impact.read"},
		"admin":   {"impact.read"},
	}
}

// NewServer assembles the impact service on Loam: the server from cfg, the
// service registered over an aggregate in memory, its answers cached in
// the server's cache store, and the aggregate fed by the CaptureCreated
// events of the server's bus. The caller serves it.
func NewServer(ctx context.Context, cfg Config, opts ...service.Option) (*service.Server, error) {
	srv, err := service.New(ctx, cfg.Config, opts...)
	if err != nil {
		return nil, err
	}
	if _, err := Register(ctx, srv); err != nil {
		srv.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	return srv, nil
}

// Register registers the impact service on srv, caching through
// srv.Cache() and subscribed to CaptureCreated on srv.Bus().
func Register(ctx context.Context, srv *service.Server) (*Service, error) {
	return RegisterOn(ctx, srv, srv.Bus(), srv.Cache())
}

// RegisterOn registers the impact service on reg, caching through store
// and subscribed to CaptureCreated on bus: for a process that runs
// several services and gives them one bus, as the demo does.
func RegisterOn(ctx context.Context, reg grpc.ServiceRegistrar, bus *events.Bus, store *cache.Store) (*Service, error) {
	byPlanter, err := cache.New[string, *impactv1.PlanterImpact](store, "impact.by_planter")
	if err != nil {
		return nil, fmt.Errorf("impact: impact cache: %w", err)
	}
	svc := New(NewAggregate(), byPlanter)
	if _, err := Subscribe(ctx, bus, svc); err != nil {
		return nil, err
	}
	impactv1.RegisterImpactServiceServer(reg, svc)
	return svc, nil
}

// LocalConfig is the configuration of an impact service on loopback that
// trusts the development issuer at issuerURL.
func LocalConfig(issuerURL string) Config {
	var cfg Config
	cfg.Service = service.Settings{
		Name:            "impact",
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
	cfg.Authz = authz.Config{Roles: Roles()}
	return cfg
}
