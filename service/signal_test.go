package service_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// The child process of the signal tests serves the stub until a signal
// stops it, then exits 0 when Serve returned nil and 1 otherwise. Its
// environment sets the drain: LOAM_TEST_DRAIN_DELAY and
// LOAM_TEST_SHUTDOWN_TIMEOUT. The stub's handler sleeps 500ms for "slow",
// until its context ends for "stuck", and 0-20ms for anything else.
func TestMain(m *testing.M) {
	if os.Getenv("LOAM_TEST_SIGNAL_CHILD") == "1" {
		os.Exit(signalChild())
	}
	os.Exit(m.Run())
}

func signalChild() int {
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cfg := testConfig()
	cfg.Service.AdminAddr = ""
	for env, d := range map[string]*time.Duration{"LOAM_TEST_DRAIN_DELAY": &cfg.Service.DrainDelay, "LOAM_TEST_SHUTDOWN_TIMEOUT": &cfg.Service.ShutdownTimeout} {
		if v := os.Getenv(env); v != "" {
			if *d, err = time.ParseDuration(v); err != nil {
				fmt.Println(err)
				return 1
			}
		}
	}
	srv, err := service.New(ctx, cfg, service.WithTelemetry(tel))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	(&stubserver.Stub{Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		switch in.GetValue() {
		case "slow":
			fmt.Println("slow call started")
			time.Sleep(500 * time.Millisecond)
		case "stuck":
			fmt.Println("stuck call started")
			<-ctx.Done()
			return nil, ctx.Err()
		default:
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		}
		return in, nil
	}}).Register(srv)
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

// child is a server in a child process.
type child struct {
	cmd   *exec.Cmd
	lines *bufio.Scanner
	conn  *grpc.ClientConn
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "LOAM_TEST_SIGNAL_CHILD=1"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &child{cmd: cmd, lines: bufio.NewScanner(stdout)}
	if !c.lines.Scan() || !strings.HasPrefix(c.lines.Text(), "addr=") {
		t.Fatalf("child's first line = %q, want its address", c.lines.Text())
	}
	if c.conn, err = service.Dial(t.Context(), strings.TrimPrefix(c.lines.Text(), "addr=")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	if _, err := stubserver.Unary(t.Context(), c.conn, "warm-up"); err != nil {
		t.Fatalf("call before the signal = %v", err)
	}
	return c
}

// expect waits for the child to print line.
func (c *child) expect(t *testing.T, line string) {
	t.Helper()
	if !c.lines.Scan() || c.lines.Text() != line {
		t.Fatalf("child printed %q, want %q", c.lines.Text(), line)
	}
}

// wait returns the child's exit code and the rest of its output.
func (c *child) wait(t *testing.T) (int, string) {
	t.Helper()
	var rest []string
	for c.lines.Scan() {
		rest = append(rest, c.lines.Text())
	}
	err := c.cmd.Wait()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode(), strings.Join(rest, "\n")
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, strings.Join(rest, "\n")
}

func (c *child) signal(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERMDrains sends SIGTERM while a call is in flight: the call must
// finish and the process must exit cleanly.
func TestSIGTERMDrains(t *testing.T) {
	c := startChild(t)
	inflight := make(chan error, 1)
	go func() {
		_, err := stubserver.Unary(context.Background(), c.conn, "slow")
		inflight <- err
	}()
	c.expect(t, "slow call started")
	c.signal(t)
	if err := <-inflight; err != nil {
		t.Errorf("call in flight at SIGTERM = %v, want it to finish", err)
	}
	if code, out := c.wait(t); code != 0 || !strings.Contains(out, "serve returned <nil>") {
		t.Errorf("child exit %d, output %q; want 0 and Serve returning nil", code, out)
	}
}

// TestSIGTERMUnderLoad drains a server under a bounded load loop whose
// clients stop sending, as a load balancer does, once health turns
// NOT_SERVING during the drain delay: no call fails and the exit is clean.
func TestSIGTERMUnderLoad(t *testing.T) {
	c := startChild(t, "LOAM_TEST_DRAIN_DELAY=300ms", "LOAM_TEST_SHUTDOWN_TIMEOUT=5s")
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := 0; i < 2000 && !stop.Load(); i++ {
				if _, err := stubserver.Unary(context.Background(), c.conn, "load"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ok.Add(1)
			}
		})
	}
	for ok.Load() < 200 {
		time.Sleep(5 * time.Millisecond)
	}
	c.signal(t)
	// The balancer: stop sending on NOT_SERVING.
	hc := healthpb.NewHealthClient(c.conn)
	for !stop.Load() {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			stop.Store(true)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed during the drain, first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if code, out := c.wait(t); code != 0 {
		t.Errorf("child exit %d, output %q; want 0", code, out)
	}
	t.Logf("%d calls, none failed", ok.Load())
}

// TestSIGTERMCutsStuckCallsExitsNonZero: a call still running when the
// shutdown timeout ends is cancelled, and the process says so by its exit
// code.
func TestSIGTERMCutsStuckCallsExitsNonZero(t *testing.T) {
	c := startChild(t, "LOAM_TEST_SHUTDOWN_TIMEOUT=200ms")
	go stubserver.Unary(context.Background(), c.conn, "stuck")
	c.expect(t, "stuck call started")
	c.signal(t)
	if code, out := c.wait(t); code != 1 || !strings.Contains(out, "in-flight calls were cancelled") {
		t.Errorf("child exit %d, output %q; want 1 and Serve naming the cut calls", code, out)
	}
}

// TestSecondSignalForcesExit: a second SIGTERM during a long drain ends it
// at once.
func TestSecondSignalForcesExit(t *testing.T) {
	c := startChild(t, "LOAM_TEST_SHUTDOWN_TIMEOUT=30s")
	go stubserver.Unary(context.Background(), c.conn, "stuck")
	c.expect(t, "stuck call started")
	c.signal(t)
	time.Sleep(200 * time.Millisecond)
	begin := time.Now()
	c.signal(t)
	code, out := c.wait(t)
	if code != 1 {
		t.Errorf("child exit %d, output %q; want 1", code, out)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("exit took %v after the second signal, want it at once", took)
	}
}
