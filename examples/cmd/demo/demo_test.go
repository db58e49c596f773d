package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
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
	for _, want := range []string{"Loam demo: the captures service on 127.0.0.1:", "the impact service on 127.0.0.1:", "All 13 decisions as expected", "/metrics"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
