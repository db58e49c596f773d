package service_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

// TreesConfig is a service's configuration: Loam's sections, and its own.
type TreesConfig struct {
	service.Config
	Trees struct {
		Region string `koanf:"region"`
	} `koanf:"trees"`
}

// NewTreesServer builds the trees service from its configuration; it has
// the shape of service.New, so it is a service.Builder as it is.
func NewTreesServer(ctx context.Context, cfg TreesConfig, opts ...service.Option) (*service.Server, error) {
	srv, err := service.New(ctx, cfg.Config, opts...)
	if err != nil {
		return nil, err
	}
	(&stubserver.Stub{}).Register(srv) // pb.RegisterTreesServer(srv, impl)
	fmt.Println("trees in", cfg.Trees.Region)
	return srv, nil
}

func ExampleRun() {
	dir, err := os.MkdirTemp("", "trees")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	base := `service:
  name: trees
  listen_addr: 127.0.0.1:0
  admin_addr: 127.0.0.1:0
  drain_delay: 0s
authz:
  rules:
    /loam.test.v1.Stub/*: {public: true}
trees:
  region: eu-west
`
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(base), 0o644); err != nil {
		log.Fatal(err)
	}
	// A service's main is one line:
	//
	//	func main() { service.Main("trees", NewTreesServer) }
	//
	// Run is what it calls, here with a context that ends the service.
	// TREES_TREES__REGION, or --trees.region, would override the file.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = service.Run(ctx, "trees", []string{"--config", dir, "--env", "development"}, NewTreesServer)
	fmt.Println("stopped:", err)
	// Output:
	// trees in eu-west
	// stopped: <nil>
}
