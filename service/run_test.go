package service_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// ordersConfig is a service's own configuration type: Loam's sections and
// one of its own.
type ordersConfig struct {
	service.Config
	Orders struct {
		Region string `koanf:"region" validate:"required"`
	} `koanf:"orders"`
}

const ordersBase = `service:
  name: orders
  listen_addr: 127.0.0.1:0
  admin_addr: 127.0.0.1:0
  drain_delay: 0s
authz:
  rules:
    /loam.test.v1.Stub/*: {public: true}
orders:
  region: eu-west
`

// TestRunServesAndStops runs a service from its files until its context
// ends, and calls it meanwhile.
func TestRunServesAndStops(t *testing.T) {
	dir := writeFiles(t, map[string]string{"base.yaml": ordersBase})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	built := make(chan *service.Server, 1)
	var region string
	build := func(ctx context.Context, cfg ordersConfig, opts ...service.Option) (*service.Server, error) {
		region = cfg.Orders.Region
		srv, err := service.New(ctx, cfg.Config, opts...)
		if err == nil {
			(&stubserver.Stub{}).Register(srv)
			built <- srv
		}
		return srv, err
	}
	done := make(chan error, 1)
	go func() { done <- service.Run(ctx, "orders", []string{"--config", dir}, build) }()
	srv := <-built
	for srv.Addr() == nil {
		select {
		case err := <-done:
			t.Fatalf("Run() = %v before serving", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn)
	if region != "eu-west" {
		t.Errorf("orders.region = %q, want eu-west from base.yaml", region)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() after its context ended = %v, want nil", err)
	}
}

func TestRunFailures(t *testing.T) {
	errBuild := errors.New("no database")
	refuse := func(context.Context, ordersConfig, ...service.Option) (*service.Server, error) { return nil, errBuild }
	good := writeFiles(t, map[string]string{"base.yaml": ordersBase})
	for _, tc := range []struct {
		name  string
		files map[string]string
		args  []string
		want  string
	}{
		{"a typo in a key", map[string]string{"base.yaml": "service:\n  name: orders\n  listen_adr: 127.0.0.1:0\n"}, nil, "base.yaml:3"},
		{"a missing section of the service's own", map[string]string{"base.yaml": "service:\n  name: orders\n"}, nil, "orders.region"},
		{"an unknown flag", nil, []string{"--config", good, "--verbose"}, "flag provided but not defined: -verbose"},
		{"a flag without its value", nil, []string{"--config"}, "flag needs an argument"},
		{"a flag naming no key", nil, []string{"--config", good, "--service.listen_adr=:1"}, "service.listen_adr"},
		{"an argument", nil, []string{"--config", good, "serve"}, `unexpected argument "serve"`},
		{"a missing directory", nil, []string{"--config", good + "/nowhere"}, "nowhere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.files != nil {
				args = []string{"--config", writeFiles(t, tc.files)}
			}
			err := service.Run(t.Context(), "orders", args, refuse)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run(%q) = %v, want an error containing %q", args, err, tc.want)
			}
		})
	}
	if err := service.Run(t.Context(), "orders", []string{"--config", good}, refuse); !errors.Is(err, errBuild) {
		t.Errorf("Run() with a failing build = %v, want its error", err)
	}
	noServer := func(context.Context, ordersConfig, ...service.Option) (*service.Server, error) { return nil, nil }
	if err := service.Run(t.Context(), "orders", []string{"--config", good}, noServer); err == nil || !strings.Contains(err.Error(), "no server") {
		t.Errorf("Run() with a build that returns nothing = %v, want an error", err)
	}
	if err := service.Run(t.Context(), "orders", []string{"-h"}, refuse); err != nil {
		t.Errorf("Run(-h) = %v, want nil", err)
	}
}

// TestRunReadsItsEnvironment checks the prefix of environment variables,
// and the default directory.
func TestRunReadsItsEnvironment(t *testing.T) {
	dir := writeFiles(t, map[string]string{"base.yaml": ordersBase})
	t.Setenv("ORDER_API_ORDERS__REGION", "us-east")
	t.Setenv("LOAM_ENV", "staging")
	stop := errors.New("seen")
	var region, env string
	build := func(_ context.Context, cfg ordersConfig, _ ...service.Option) (*service.Server, error) {
		region, env = cfg.Orders.Region, cfg.Service.Environment
		return nil, stop
	}
	if err := service.Run(t.Context(), "order-api", nil, build, service.WithConfigDir(dir)); !errors.Is(err, stop) {
		t.Fatalf("Run() = %v", err)
	}
	if region != "us-east" || env != "staging" {
		t.Errorf("orders.region = %q, environment %q; want us-east from ORDER_API_ORDERS__REGION and staging from LOAM_ENV", region, env)
	}
	if err := service.Run(t.Context(), "order-api", []string{"--env=production"}, build, service.WithConfigDir(dir)); !errors.Is(err, stop) || env != "production" {
		t.Errorf("Run(--env=production) = %v, environment %q; want production", err, env)
	}
}

func TestEnvPrefix(t *testing.T) {
	for name, want := range map[string]string{"captures": "CAPTURES", "order-api": "ORDER_API", "v2.Billing": "V2_BILLING"} {
		if got := service.EnvPrefix(name); got != want {
			t.Errorf("EnvPrefix(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestRunAppliesAChangeMadeWhileBuilding changes the files while the
// server is being built: the change is applied once it is.
func TestRunAppliesAChangeMadeWhileBuilding(t *testing.T) {
	dir := writeFiles(t, map[string]string{"base.yaml": ordersBase})
	logs := &syncBuffer{}
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithLogOutput(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	build := func(ctx context.Context, cfg ordersConfig, opts ...service.Option) (*service.Server, error) {
		changed := strings.Replace(ordersBase, "drain_delay: 0s", "drain_delay: 0s\n  limits:\n    max_concurrent_calls: 7", 1)
		if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(changed), 0o644); err != nil {
			return nil, err
		}
		time.Sleep(500 * time.Millisecond) // past the watch's debounce: the change arrives mid-build
		srv, err := service.New(ctx, cfg.Config, append(opts, service.WithTelemetry(tel))...)
		if err == nil {
			(&stubserver.Stub{}).Register(srv)
		}
		return srv, err
	}
	done := make(chan error, 1)
	go func() { done <- service.Run(ctx, "orders", []string{"--config", dir}, build) }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "config reloaded"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload within 10s of a change made while building; logs:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "max_concurrent_calls") {
		t.Errorf("reload log does not name the changed key:\n%s", logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
}
