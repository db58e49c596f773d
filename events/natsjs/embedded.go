package natsjs

import (
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embedded is a NATS server running in the process.
type embedded struct {
	srv     *server.Server
	tempDir string // removed on shutdown; empty when the store is the user's
}

func startEmbedded(c EmbeddedConfig) (*embedded, error) {
	e := &embedded{}
	dir := c.StoreDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "loam-nats-"); err != nil {
			return nil, fmt.Errorf("natsjs: embedded server store: %w", err)
		}
		e.tempDir = dir
	}
	port := c.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "loam-embedded",
		Host:       c.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		e.removeTemp()
		return nil, fmt.Errorf("natsjs: events.nats.embedded: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		e.removeTemp()
		return nil, fmt.Errorf("natsjs: events.nats.embedded: the server did not start listening on %s:%d within 10s", c.Host, c.Port)
	}
	e.srv = srv
	return e, nil
}

func (e *embedded) clientURL() string { return e.srv.ClientURL() }

// shutdown stops the server and removes its temporary store. It does
// nothing on a nil e.
func (e *embedded) shutdown() error {
	if e == nil {
		return nil
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	return e.removeTemp()
}

func (e *embedded) removeTemp() error {
	if e.tempDir == "" {
		return nil
	}
	return os.RemoveAll(e.tempDir)
}
