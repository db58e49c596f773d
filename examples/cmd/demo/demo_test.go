package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
)

// TestScenario plays the demo in process and checks every decision, with
// the reason the service recorded for it.
func TestScenario(t *testing.T) {
	e, err := start(t.Context(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	results := e.play(t.Context())

	want := []struct {
		code   codes.Code
		detail string
		why    string
	}{
		{codes.OK, "SERVING", "exempt"},
		{codes.Unauthenticated, "authentication required", "authn: missing"},
		{codes.OK, "created cap_", "authz: allow captures.create (granted)"},
		{codes.OK, "the same cap_", "authz: allow captures.create (granted)"},
		{codes.PermissionDenied, "permission denied", "authz: deny captures.create (condition_false)"},
		{codes.OK, "created cap_", "authz: allow captures.create (granted)"},
		{codes.OK, "1 captures map[alice:1]", "authz: allow captures.read (granted)"},
		{codes.PermissionDenied, "permission denied", "captures.read_all (not_granted)"},
		{codes.OK, "of alice", "authz: allow captures.read (granted)"},
		{codes.OK, "2 captures map[alice:1 bob:1]", "captures.read_all (granted)"},
		{codes.PermissionDenied, "permission denied", "authz: deny captures.create (not_granted)"},
		{codes.Unauthenticated, "authentication required", "authn: expired"},
		// The two captures alice and bob created reached impact as events.
		{codes.OK, "alice: 1 captures, counted from CaptureCreated", "authz: allow impact.read (granted)"},
		{codes.Unauthenticated, "authentication required", "authn: missing"},
	}
	if len(results) != len(want) {
		t.Fatalf("scenario played %d steps, want %d", len(results), len(want))
	}
	for i, r := range results {
		w := want[i]
		if r.Got != w.code || !strings.Contains(r.Detail, w.detail) || !strings.Contains(r.Why, w.why) {
			t.Errorf("step %d, %s %s = %v %q (%s); want %v %q (%s)", i+1, r.Who, r.What, r.Got, r.Detail, r.Why, w.code, w.detail, w.why)
		}
		if r.Got != r.Want {
			t.Errorf("step %d: the scenario expects %v, the test %v", i+1, r.Want, w.code)
		}
	}
}

// TestRun checks the program's output and its exit path.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out, io.Discard, false); err != nil {
		t.Fatalf("run() = %v\n%s", err, out.String())
	}
	for _, want := range []string{"Loam demo: the captures service on 127.0.0.1:", "the impact service on 127.0.0.1:", "All 14 decisions as expected", "/metrics"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServe keeps the demo serving and follows its printed help as a
// user would: the impact token and address it prints answer a call.
func TestRunServe(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out, io.Discard, true) }()
	var printed string
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(printed, "# impact"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no serve help within 20s:\n%s", printed)
		}
		printed = out.String()
	}
	token := regexp.MustCompile(`CAROL_IMPACT=(\S+)`).FindStringSubmatch(printed)
	addr := regexp.MustCompile(`(127\.0\.0\.1:\d+) impact\.v1\.ImpactService/ListTopPlanters`).FindStringSubmatch(printed)
	if token == nil || addr == nil {
		t.Fatalf("serve help lacks CAROL_IMPACT or the impact address:\n%s", printed)
	}
	conn, err := grpc.NewClient(addr[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token[1])
	top, err := impactv1.NewImpactServiceClient(conn).ListTopPlanters(callCtx, &impactv1.ListTopPlantersRequest{Limit: 5})
	if err != nil || len(top.GetPlanters()) != 2 {
		t.Errorf("ListTopPlanters with the printed token = %v, %v; want alice and bob", top, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run(serve) after cancel = %v, want nil", err)
	}
}
