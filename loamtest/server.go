package loamtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// Server is a Loam server on loopback, started by StartServer.
type Server struct {
	*service.Server
	// Addr is the gRPC server's address, host:port.
	Addr string
}

// StartServer builds a server from cfg with service.New, registers the
// services with register (each one a generated RegisterXxxServer call),
// and serves on loopback until the test ends, when it drains and the test
// waits for it. It fails the test at once, with the message, when the
// server cannot start: a method without an access rule, a condition that
// does not compile, a bad configuration.
//
// StartServer adjusts cfg for a test: both listeners on 127.0.0.1 with
// free ports, the environment "test" unless cfg names one, no drain delay,
// a one-second shutdown timeout, no signal handling, and telemetry that
// records nothing unless cfg asks for it, logging to the test's output.
// opts are passed to service.New after those.
func StartServer(t testing.TB, cfg service.Config, register func(grpc.ServiceRegistrar), opts ...service.Option) *Server {
	t.Helper()
	cfg.Service.ListenAddr = "127.0.0.1:0"
	cfg.Service.AdminAddr = "127.0.0.1:0"
	if cfg.Service.Environment == "" {
		cfg.Service.Environment = "test"
	}
	if cfg.Service.Name == "" {
		cfg.Service.Name = "test"
	}
	cfg.Service.DrainDelay = 0
	cfg.Service.ShutdownTimeout = time.Second
	tel, err := telemetry.New(t.Context(), cfg.Telemetry,
		telemetry.WithLogOutput(t.Output()),
		telemetry.WithService(cfg.Service.Name, cfg.Service.Version, cfg.Service.Environment))
	if err != nil {
		t.Fatalf("loamtest: telemetry: %v", err)
	}
	opts = append([]service.Option{service.WithTelemetry(tel), service.WithoutSignals()}, opts...)
	srv, err := service.New(context.WithoutCancel(t.Context()), cfg, opts...)
	if err != nil {
		tel.Shutdown(context.Background())
		t.Fatalf("loamtest: service.New: %v", err)
	}
	if register != nil {
		register(srv)
	}
	if err := srv.Listen(); err != nil {
		srv.Shutdown(context.Background())
		tel.Shutdown(context.Background())
		t.Fatalf("loamtest: the server cannot start: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil && !errors.Is(err, service.ErrCallsCut) {
			t.Errorf("loamtest: server shutdown: %v", err)
		}
		<-done
		tel.Shutdown(context.Background())
	})
	return &Server{Server: srv, Addr: srv.Addr().String()}
}

// Client returns a connection to the server that sends token as a bearer
// token with every call, or no credentials when token is "". It is closed
// when the test ends.
func (s *Server) Client(t testing.TB, token string, opts ...service.DialOption) *grpc.ClientConn {
	t.Helper()
	if token != "" {
		opts = append([]service.DialOption{service.WithPerRPCCredentials(bearer(token))}, opts...)
	}
	conn, err := s.Dial(t.Context(), s.Addr, opts...)
	if err != nil {
		t.Fatalf("loamtest: dialing %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
