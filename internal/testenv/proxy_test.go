package testenv

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer answers each line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip opens a connection to addr, sends one line and reads it back
// within d.
func roundTrip(addr string, d time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(start.Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, errors.New("echo returned " + line)
	}
	return time.Since(start), nil
}

func TestProxyCutRestore(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	if _, err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("round trip through the proxy = %v", err)
	}
	// A connection open across the cut is closed by it.
	open, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(open).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	p.Cut()
	if dialable(addr, 200*time.Millisecond) {
		t.Errorf("after Cut, %s still accepts connections", addr)
	}
	open.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read on a connection open across Cut = %v, want it closed", err)
	}
	p.Restore()
	if p.Addr() != addr {
		t.Errorf("Addr() after Restore = %s, want %s", p.Addr(), addr)
	}
	if _, err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("round trip after Restore = %v", err)
	}
}

func TestProxyStallAndLatency(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	p.Stall()
	if _, err := roundTrip(p.Addr(), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("round trip through a stalled proxy = %v, want a deadline error", err)
	}
	p.Restore()
	p.Latency(200 * time.Millisecond)
	took, err := roundTrip(p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatalf("round trip with latency = %v", err)
	}
	if took < 200*time.Millisecond {
		t.Errorf("round trip with 200ms latency took %v", took)
	}
	p.Restore()
	if _, err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("round trip after Restore = %v", err)
	}
}

func TestProxyResetPeer(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	p.ResetPeer(0)
	if _, err := roundTrip(p.Addr(), time.Second); err == nil {
		t.Error("round trip through a resetting proxy succeeded")
	}
	p.Restore()
	if _, err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("round trip after Restore = %v", err)
	}
}
