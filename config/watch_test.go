package config_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loamhq/loam/config"
)

type update struct {
	port int
	err  error
}

// next waits, bounded, for the next update from a watcher.
func next(t *testing.T, updates <-chan update) update {
	t.Helper()
	select {
	case u := <-updates:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update from Watch within 5s")
		return update{}
	}
}

// wantPort waits for the next update and checks it is a good value with port.
func wantPort(t *testing.T, updates <-chan update, port int) {
	t.Helper()
	if u := next(t, updates); u.err != nil || u.port != port {
		t.Fatalf("update = %+v, want port %d and no error", u, port)
	}
}

// portFile is a base.yaml setting service.port.
func portFile(port string) string { return "service:\n  name: captures\n  port: " + port + "\n" }

// quiet checks that no update arrives for a while.
func quiet(t *testing.T, updates <-chan update, d time.Duration) {
	t.Helper()
	select {
	case u := <-updates:
		t.Fatalf("unexpected update from Watch: %+v", u)
	case <-time.After(d):
	}
}

func TestWatch(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": portFile("1000")})
	base := filepath.Join(dir, "base.yaml")
	updates := make(chan update, 10)
	w, err := config.Watch(context.Background(), func(c testConfig, err error) {
		updates <- update{c.Service.Port, err}
	}, config.WithDir(dir), config.WithDebounce(20*time.Millisecond))
	if err != nil {
		t.Fatalf("Watch() error = %v", err)
	}
	defer w.Close()

	if got := w.Current().Service.Port; got != 1000 {
		t.Fatalf("Current().Service.Port = %d, want 1000", got)
	}

	t.Run("good change is delivered", func(t *testing.T) {
		writeFile(t, base, portFile("2000"))
		wantPort(t, updates, 2000)
	})
	t.Run("bad change keeps the last good value", func(t *testing.T) {
		writeFile(t, base, portFile("70000"))
		u := next(t, updates)
		var cerr *config.Error
		if !errors.As(u.err, &cerr) || u.port != 2000 {
			t.Fatalf("update = %+v, want port 2000 and a *config.Error", u)
		}
		if got := w.Current().Service.Port; got != 2000 {
			t.Errorf("Current().Service.Port = %d, want 2000", got)
		}
	})
	t.Run("recovery is delivered", func(t *testing.T) {
		writeFile(t, base, portFile("3000"))
		wantPort(t, updates, 3000)
	})
	t.Run("rename over the file is seen", func(t *testing.T) {
		tmp := filepath.Join(dir, ".base.yaml.tmp")
		writeFile(t, tmp, portFile("4000"))
		if err := os.Rename(tmp, base); err != nil {
			t.Fatal(err)
		}
		wantPort(t, updates, 4000)
	})
	t.Run("editor temp files and bursts", func(t *testing.T) {
		for _, name := range []string{".base.yaml.swp", "base.yaml~", ".#base.yaml", "4913"} {
			writeFile(t, filepath.Join(dir, name), "junk: [")
		}
		quiet(t, updates, 100*time.Millisecond)
		for _, port := range []string{"5001", "5002", "5003"} {
			writeFile(t, base, portFile(port))
		}
		wantPort(t, updates, 5003)
		quiet(t, updates, 100*time.Millisecond)
	})
}

func TestWatchStops(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": "service:\n  name: captures\n"})
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{}, 10)
	w, err := config.Watch(ctx, func(testConfig, error) { calls <- struct{}{} },
		config.WithDir(dir), config.WithDebounce(time.Millisecond))
	if err != nil {
		t.Fatalf("Watch() error = %v", err)
	}
	cancel()
	if err := w.Close(); err != nil { // waits for the goroutine
		t.Errorf("Close() = %v, want nil", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	writeFile(t, filepath.Join(dir, "base.yaml"), "service:\n  name: changed\n")
	time.Sleep(20 * time.Millisecond)
	if len(calls) != 0 {
		t.Errorf("onChange called after Close")
	}
	if got := w.Current().Service.Name; got != "captures" {
		t.Errorf("Current().Service.Name = %q after Close, want %q", got, "captures")
	}
}

func TestWatchInvalidStart(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.yaml": "service:\n  port: 1\n"})
	_, err := config.Watch(context.Background(), func(testConfig, error) {}, config.WithDir(dir))
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Errorf("Watch() error = %v, want a *config.Error", err)
	}
}
