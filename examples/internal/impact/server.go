package impact

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/examples/internal/pgdb"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
	"github.com/loamhq/loam/service"
)

// Config is the impact service's configuration: Loam's standard sections,
// and the `impact` section.
type Config struct {
	service.Config
	// Impact is the `impact` section.
	Impact Settings `koanf:"impact"`
}

// Settings is the `impact` section.
type Settings struct {
	// Store is where the counts live: "memory" (the default; they start
	// from nothing with each process) or "postgres", in Database.
	Store string `koanf:"store" default:"memory" validate:"omitempty,oneof=memory postgres"`
	// Database is the PostgreSQL database of the postgres store.
	Database pgdb.Config `koanf:"database"`
}

// Validate reports every problem of cfg: Loam's sections', and a store
// without its database or a database without its store.
func (cfg Config) Validate() error {
	errs := []error{cfg.Config.Validate()}
	db := cfg.Impact.Database.URL != ""
	switch cfg.Impact.Store {
	case "postgres":
		if !db {
			errs = append(errs, errors.New("impact.database.url: required when impact.store is postgres"))
		}
	case "", "memory":
		if db {
			errs = append(errs, errors.New("impact.database.url: set, but impact.store is memory; set impact.store: postgres to use it"))
		}
	default:
		errs = append(errs, fmt.Errorf("impact.store: %q is neither memory nor postgres", cfg.Impact.Store))
	}
	return errors.Join(errs...)
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
// service registered over the store cfg names, its answers cached in the
// server's cache store, and the store fed by the CaptureCreated events of
// the server's bus. The caller serves it; its Shutdown closes the store.
func NewServer(ctx context.Context, cfg Config, opts ...service.Option) (*service.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv, err := service.New(ctx, cfg.Config, opts...)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*service.Server, error) {
		srv.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	store, err := OpenStore(ctx, srv, cfg.Impact)
	if err != nil {
		return fail(err)
	}
	if _, err := Register(ctx, srv, store); err != nil {
		return fail(err)
	}
	return srv, nil
}

// OpenStore opens the store the `impact` section names for srv: a
// MemoryStore, or a PostgresStore whose pool /readyz checks and srv's
// Shutdown closes.
func OpenStore(ctx context.Context, srv *service.Server, cfg Settings) (Store, error) {
	if cfg.Store != "postgres" {
		return NewMemoryStore(), nil
	}
	pool, err := pgdb.Open(ctx, "impact.database", cfg.Database, "impact")
	if err != nil {
		return nil, fmt.Errorf("impact: %w", err)
	}
	store, err := NewPostgresStore(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("impact: %w", err)
	}
	srv.AddReadinessCheck("postgres", pool.Ping)
	srv.OnShutdown(func(context.Context) error { pool.Close(); return nil })
	return store, nil
}

// Register registers the impact service on srv over store, caching
// through srv.Cache() and subscribed to CaptureCreated on srv.Bus().
func Register(ctx context.Context, srv *service.Server, store Store) (*Service, error) {
	return RegisterOn(ctx, srv, srv.Bus(), srv.Cache(), store)
}

// RegisterOn registers the impact service on reg over store, caching
// through cs and subscribed to CaptureCreated on bus: for a process that
// runs several services and gives them one bus, as the demo does.
func RegisterOn(ctx context.Context, reg grpc.ServiceRegistrar, bus *events.Bus, cs *cache.Store, store Store) (*Service, error) {
	byPlanter, err := cache.New[string, *impactv1.PlanterImpact](cs, "impact.by_planter")
	if err != nil {
		return nil, fmt.Errorf("impact: impact cache: %w", err)
	}
	top, err := cache.New[string, *impactv1.ListTopPlantersResponse](cs, "impact.top")
	if err != nil {
		return nil, fmt.Errorf("impact: ranking cache: %w", err)
	}
	svc := New(store, WithCaches(byPlanter, top))
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
