package service_test

import (
	"context"
	"fmt"
	"log"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

func Example() {
	// In a service, cfg comes from config.Load of the service's files.
	cfg := service.Config{
		Service: service.Settings{
			Name:        "trees",
			Environment: "development",
			ListenAddr:  "127.0.0.1:0",
		},
		// A service without a .proto takes its access rules from config.
		Authz: authz.Config{Rules: map[string]authz.Rule{"/" + stubserver.Service + "/*": {Public: true}}},
	}
	ctx, stop := context.WithCancel(context.Background())
	srv, err := service.New(ctx, cfg, service.WithoutSignals())
	if err != nil {
		log.Fatal(err)
	}
	// Register services as generated code does: pb.RegisterTreesServer(srv, impl).
	(&stubserver.Stub{}).Register(srv)
	if err := srv.Listen(); err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()

	conn, err := service.Dial(ctx, srv.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: stubserver.Service}, grpc.WaitForReady(true))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(stubserver.Service, resp.GetStatus())

	stop() // as SIGTERM would: drain, then return
	fmt.Println("Serve returned", <-done)
	// Output:
	// loam.test.v1.Stub SERVING
	// Serve returned <nil>
}
