// Command impact runs the impact example service standalone, against
// the OIDC issuer its configuration names, with health and, outside
// production, reflection for grpcurl.
//
//	go run ./examples/impact --env staging
//	go run ./examples/impact --config examples/impact/config --service.listen_addr=127.0.0.1:7001
//
// Flags named after configuration keys override them; so do environment
// variables such as IMPACT_SERVICE__LISTEN_ADDR. SIGTERM or Ctrl-C drains
// and stops it. The role policy reloads when the files change.
//
// The service counts the CaptureCreated events of its own events bus. In
// development that bus is in memory, so a standalone impact sees no
// captures' events (the demo runs both on one bus); staging and production
// name NATS, where the captures service's outbox relays them, and keep the
// counts in PostgreSQL.
package main

import (
	"github.com/loamhq/loam/examples/internal/impact"
	"github.com/loamhq/loam/service"
)

func main() {
	service.Main("impact", impact.NewServer, service.WithConfigDir("examples/impact/config"))
}
