package captures

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/examples/internal/pgdb"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	"github.com/loamhq/loam/service"
)

// Config is the captures service's configuration: Loam's standard
// sections, and the `captures` section.
type Config struct {
	service.Config
	// Captures is the `captures` section.
	Captures Settings `koanf:"captures"`
}

// Settings is the `captures` section.
type Settings struct {
	// Store is where captures live: "memory" (the default; they go with
	// the process), or "postgres": in the database of the events outbox
	// (events.outbox.url), so that a capture and its CaptureCreated commit
	// in one transaction.
	Store string `koanf:"store" default:"memory" validate:"omitempty,oneof=memory postgres"`
}

// Validate reports every problem of cfg: Loam's sections', and a store
// and an outbox that do not go together.
func (cfg Config) Validate() error {
	return errors.Join(cfg.Config.Validate(), cfg.checkStore())
}

// checkStore refuses a store and an outbox that do not go together: a
// Postgres store publishing beside the outbox would announce captures
// whose transaction may roll back, and the outbox over memory has no
// transaction to join.
func (cfg Config) checkStore() error {
	outbox := cfg.Events.Outbox.Enabled
	switch cfg.Captures.Store {
	case "postgres":
		if !outbox {
			return errors.New("captures.store: postgres keeps captures in the database of the events outbox; set events.outbox.enabled and events.outbox.url, so that a capture and its CaptureCreated commit together")
		}
	case "", "memory":
		if outbox {
			return errors.New("events.outbox.enabled: captures in memory cannot share a transaction with the outbox; set captures.store: postgres")
		}
	default:
		return fmt.Errorf("captures.store: %q is neither memory nor postgres", cfg.Captures.Store)
	}
	return nil
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
// with the service registered on the store cfg names. The caller serves
// it; its Shutdown closes the store.
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
	store, err := OpenStore(ctx, srv, cfg)
	if err != nil {
		return fail(err)
	}
	if err := Register(ctx, srv, store); err != nil {
		return fail(err)
	}
	return srv, nil
}

// OpenStore opens the store that cfg's captures.store names for srv: a
// MemoryStore, or a PostgresStore in the database of the events outbox,
// whose pool /readyz checks and srv's Shutdown closes. It refuses a store
// and an outbox that do not go together, as Validate does; srv must have
// been built from cfg, so that its bus is the outbox cfg names.
func OpenStore(ctx context.Context, srv *service.Server, cfg Config) (Store, error) {
	if err := cfg.checkStore(); err != nil {
		return nil, fmt.Errorf("captures: %w", err)
	}
	if cfg.Captures.Store != "postgres" {
		return NewMemoryStore(), nil
	}
	outbox := cfg.Events.Outbox
	pool, err := pgdb.Open(ctx, "events.outbox", pgdb.Config{URL: outbox.URL, Password: outbox.Password, MaxConns: outbox.MaxConns}, "captures")
	if err != nil {
		return nil, fmt.Errorf("captures: %w", err)
	}
	store, err := NewPostgresStore(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("captures: %w", err)
	}
	srv.AddReadinessCheck("postgres", pool.Ping)
	srv.OnShutdown(func(context.Context) error { pool.Close(); return nil })
	return store, nil
}

// Register registers the captures service on srv, over store:
// CaptureCreated is published on srv.Bus(), GetCapture is cached in
// srv.Cache().
func Register(ctx context.Context, srv *service.Server, store Store) error {
	created, err := events.NewTopic[*capturesv1.CaptureCreated](ctx, srv.Bus())
	if err != nil {
		return fmt.Errorf("captures: CaptureCreated topic: %w", err)
	}
	byID, err := cache.New[string, *capturesv1.Capture](srv.Cache(), "captures.by_id")
	if err != nil {
		return fmt.Errorf("captures: capture cache: %w", err)
	}
	capturesv1.RegisterCaptureServiceServer(srv, New(store, WithPublisher(created), WithCache(byID)))
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
