package testenv

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Proxy is a TCP proxy on loopback that one test owns, between a client and
// a service, so the test can cut, stall or slow the connection without
// touching the shared service. It runs Toxiproxy in process.
//
// Point the client at Addr instead of the service. A Proxy is safe for
// concurrent use; t.Cleanup stops it.
type Proxy struct {
	t  testing.TB
	mu sync.Mutex
	p  *toxiproxy.Proxy
	n  int
}

// NewProxy starts a proxy on 127.0.0.1 (a free port) to upstream, a
// host:port.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	logger := zerolog.Nop()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), logger)
	p := toxiproxy.NewProxy(srv, strings.ReplaceAll(t.Name(), "/", "_"), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("testenv: starting a proxy to %s: %v", upstream, err)
	}
	px := &Proxy{t: t, p: p}
	t.Cleanup(func() {
		px.mu.Lock()
		defer px.mu.Unlock()
		px.p.Stop()
	})
	return px
}

// Addr is the proxy's host:port. It stays the same across Cut and Restore.
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.p.Listen
}

// Cut closes every connection through the proxy and refuses new ones, as a
// service that went down does.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.p.Stop()
}

// Restore accepts connections again after Cut, on the same address, and
// removes every toxic.
func (p *Proxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.p.Toxics.ResetToxics(context.Background())
	if p.p.Enabled {
		return
	}
	var err error
	for range 50 { // the port may take a moment to be free again
		if err = p.p.Start(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("testenv: restoring the proxy on %s: %v", p.p.Listen, err)
}

// Stall keeps connections open but stops passing data in both directions,
// as a peer that accepts and never answers does. Restore undoes it.
func (p *Proxy) Stall() {
	p.addToxic("timeout", "upstream", `{"timeout":0}`)
	p.addToxic("timeout", "downstream", `{"timeout":0}`)
}

// Latency delays the data from the service to the client by d. Restore
// undoes it.
func (p *Proxy) Latency(d time.Duration) {
	p.addToxic("latency", "downstream", fmt.Sprintf(`{"latency":%d}`, d.Milliseconds()))
}

// ResetPeer resets every connection (TCP RST) after d, and each new one d
// after it opens, until Restore.
func (p *Proxy) ResetPeer(d time.Duration) {
	p.addToxic("reset_peer", "upstream", fmt.Sprintf(`{"timeout":%d}`, d.Milliseconds()))
}

func (p *Proxy) addToxic(typ, stream, attrs string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	body := fmt.Sprintf(`{"name":"%s_%s_%d","type":%q,"stream":%q,"attributes":%s}`, typ, stream, p.n, typ, stream, attrs)
	if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		p.t.Fatalf("testenv: adding a %s toxic: %v", typ, err)
	}
}

// HostPort returns the service's host:port after checking, as URL does,
// that something accepts connections there: what a Proxy needs upstream.
func (s Service) HostPort(t testing.TB) string {
	t.Helper()
	hp, err := hostPort(s.URL(t))
	if err != nil {
		t.Fatalf("testenv: %s: %v", s.Name, err)
	}
	return hp
}

// dialable reports whether addr accepts a TCP connection within d.
func dialable(addr string, d time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
