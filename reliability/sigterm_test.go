//go:build fault

package reliability_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// childEnv, set to 1, makes the test binary a server for
// TestSIGTERMUnderLoad instead of running tests.
const childEnv = "LOAM_RELIABILITY_SIGTERM_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(sigtermChild())
	}
	os.Exit(m.Run())
}

// sigtermChild serves the drain handler with Loam's signal handling on, a
// 300ms drain delay and a 5s shutdown timeout; it prints its address, then,
// when Serve returns, "serve returned <error>", and exits 0 only when Serve
// returned nil.
func sigtermChild() int {
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cfg := stubConfig()
	cfg.Service.AdminAddr = ""
	cfg.Service.DrainDelay = 300 * time.Millisecond
	cfg.Service.ShutdownTimeout = 5 * time.Second
	srv, err := service.New(ctx, cfg, service.WithTelemetry(tel))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	d := &drainServer{started: map[string]bool{}}
	(&stubserver.Stub{Unary: d.handle}).Register(srv)
	if err := srv.Listen(); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("addr=" + srv.Addr().String())
	err = srv.Serve(ctx)
	fmt.Println("serve returned", err)
	if err != nil {
		return 1
	}
	return 0
}

// TestSIGTERMUnderLoad sends SIGTERM to a server process while 16 callers
// keep it busy (one call in fifty takes 400ms), callers that stop sending
// when health turns NOT_SERVING, as a load balancer does: no call fails, and
// the process exits 0, having drained every call in flight.
func TestSIGTERMUnderLoad(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// Under -race, a process waits a second before it exits (the race
	// detector's atexit_sleep_ms), which is no part of the drain.
	cmd.Env = append(os.Environ(), childEnv+"=1", "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "addr=") {
		t.Fatalf("the server process's first line = %q, want its address", lines.Text())
	}
	conn, err := service.Dial(t.Context(), strings.TrimPrefix(lines.Text(), "addr="), service.WithClientSettings(stubConfig().Service.Client))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := ctxT(t)

	var stop atomic.Bool
	var sent, ok, failed atomic.Int64
	var first firstErr
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; i < 5000 && !stop.Load(); i++ {
				v := fmt.Sprintf("call-%d-%d", w, i)
				if i%50 == 25 {
					v = "slow-" + v
				}
				sent.Add(1)
				if _, err := stubserver.Unary(ctx, conn, v); err != nil {
					failed.Add(1)
					first.set(fmt.Errorf("%s: %w", v, err))
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(time.Second) // sustained load
	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The balancer: stop sending on NOT_SERVING.
	eventually(wait, func() bool { return !serving(ctx, conn) })
	stop.Store(true)
	wg.Wait()
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	werr := cmd.Wait()
	exited := time.Since(signalled)
	code := 0
	if ee, isExit := errors.AsType[*exec.ExitError](werr); isExit {
		code = ee.ExitCode()
	} else if werr != nil {
		t.Fatal(werr)
	}
	report(t, row{scenario: "shutdown", fault: "SIGTERM to the server's process, callers follow health",
		load:     fmt.Sprintf("16 callers for 1s, 1 call in 50 takes 400ms; process exit code %d", code),
		requests: sent.Load(), errors: failed.Load(), lost: failed.Load(), dups: -1,
		recoveryNote: fmt.Sprintf("exited %v after the signal", exited.Round(time.Millisecond))})
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed across SIGTERM; first: %v", failed.Load(), sent.Load(), first.get())
	}
	if out := strings.Join(rest, "\n"); code != 0 || !strings.Contains(out, "serve returned <nil>") {
		t.Errorf("the server process exited %d with %q; want 0 and Serve returning nil", code, out)
	}
}
