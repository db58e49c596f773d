// Command captures runs the captures example service standalone, against
// the OIDC issuer its configuration names, with health and, outside
// production, reflection for grpcurl.
//
//	go run ./examples/captures --env staging
//	go run ./examples/captures --config examples/captures/config --service.listen_addr=127.0.0.1:7000
//
// Flags named after configuration keys override them; so do environment
// variables such as CAPTURES_SERVICE__LISTEN_ADDR. SIGTERM or Ctrl-C drains
// and stops it. The role policy reloads when the files change.
//
// In development captures live in memory and events on an in-memory bus;
// staging and production keep captures in PostgreSQL and send
// CaptureCreated to NATS through the outbox in the same database.
package main

import (
	"github.com/loamhq/loam/examples/internal/captures"
	"github.com/loamhq/loam/service"
)

func main() {
	service.Main("captures", captures.NewServer, service.WithConfigDir("examples/captures/config"))
}
