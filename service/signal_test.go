package service_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// TestSIGTERMDrains runs a server in a child process, as a service runs,
// and sends it SIGTERM while a call is in flight: the call must finish and
// the process must exit cleanly.
func TestSIGTERMDrains(t *testing.T) {
	if os.Getenv("LOAM_TEST_SIGNAL_CHILD") == "1" {
		os.Exit(signalChild())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGTERMDrains$")
	cmd.Env = append(os.Environ(), "LOAM_TEST_SIGNAL_CHILD=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "addr=") {
		t.Fatalf("child's first line = %q, want its address", lines.Text())
	}
	conn, err := service.Dial(t.Context(), strings.TrimPrefix(lines.Text(), "addr="))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := stubserver.Unary(t.Context(), conn, "warm-up"); err != nil {
		t.Fatalf("call before the signal = %v", err)
	}

	inflight := make(chan error, 1)
	go func() {
		_, err := stubserver.Unary(context.Background(), conn, "slow")
		inflight <- err
	}()
	if !lines.Scan() || lines.Text() != "slow call started" {
		t.Fatalf("child printed %q, want the slow call to start", lines.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-inflight; err != nil {
		t.Errorf("call in flight at SIGTERM = %v, want it to finish", err)
	}
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child exit = %v, want 0; output %q", err, rest)
	}
	if got := strings.Join(rest, "\n"); !strings.Contains(got, "serve returned <nil>") {
		t.Errorf("child output = %q, want Serve to return nil", got)
	}
}

// signalChild serves until a signal stops it, and returns the exit code.
func signalChild() int {
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{}, telemetry.WithLogOutput(io.Discard))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cfg := testConfig()
	cfg.Service.AdminAddr = ""
	srv, err := service.New(ctx, cfg, service.WithTelemetry(tel))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	(&stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "slow" {
			fmt.Println("slow call started")
			time.Sleep(500 * time.Millisecond)
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
