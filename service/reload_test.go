package service_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

// ruledConfig needs the permission stubs.call for the stub's methods, and
// grants it to role.
func ruledConfig(role string) service.Config {
	cfg := testConfig()
	cfg.Authz = authz.Config{
		Roles: map[string][]string{role: {"stubs.call"}},
		Rules: map[string]authz.Rule{"/" + stubserver.Service + "/*": {Permission: "stubs.call"}},
	}
	return cfg
}

// trustRoles authenticates a principal with the roles of the x-roles
// header.
var trustRoles = service.WithAuthentication(trustSubjectRoles)

func callAs(ctx context.Context, r *running, role string) error {
	_, err := stubserver.Unary(metadata.AppendToOutgoingContext(ctx, "x-subject", "tester", "x-roles", role), r.conn, "x")
	return err
}

func TestReload(t *testing.T) {
	cfg := ruledConfig("reader")
	r := start(t, cfg, stub(), trustRoles)
	if err := callAs(t.Context(), r, "writer"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("writer before the reload = %v, want PermissionDenied", err)
	}

	next := ruledConfig("writer")
	next.Telemetry.LogLevel = "debug"
	next.Service.ListenAddr = "127.0.0.1:1"
	next.Service.Limits.MaxConcurrentCalls = 50
	if err := r.srv.Reload(next); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	if err := callAs(t.Context(), r, "writer"); err != nil {
		t.Errorf("writer after the reload = %v, want OK", err)
	}
	logs := r.logs.String()
	for _, want := range []string{`"msg":"config reloaded"`, `"authz.roles"`, `"telemetry.log_level"`, `"service.limits.max_concurrent_calls"`,
		`"msg":"config changes that take effect only after a restart"`, `"service.listen_addr"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log does not say %s:\n%s", want, logs)
		}
	}
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Error("no debug line after telemetry.log_level became debug")
	}

	t.Run("rejected reload changes nothing", func(t *testing.T) {
		bad := ruledConfig("reader")
		bad.Authz.Roles["reader"] = []string{"Stubs Call"}
		if err := r.srv.Reload(bad); err == nil || !strings.Contains(err.Error(), "Stubs Call") {
			t.Errorf("Reload(bad condition) = %v, want it named", err)
		}
		if err := callAs(t.Context(), r, "writer"); err != nil {
			t.Errorf("writer after a rejected reload = %v, want OK: the last good policy stays", err)
		}
	})
	t.Run("a rule that makes a method public needs a restart", func(t *testing.T) {
		pub := ruledConfig("writer")
		pub.Telemetry.LogLevel = "debug"
		pub.Service.Limits.MaxConcurrentCalls = 50
		pub.Authz.Rules["/"+stubserver.Service+"/*"] = authz.Rule{Public: true}
		if err := r.srv.Reload(pub); err != nil {
			t.Fatal(err)
		}
		if err := callAs(t.Context(), r, "nobody"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("call after a reload that would make it public = %v, want still PermissionDenied", err)
		}
		if !strings.Contains(r.logs.String(), `"authz.rules"`) {
			t.Error("the restart warning does not name authz.rules")
		}
	})
	want := map[string]float64{"applied": 2, "rejected": 1}
	for result, n := range want {
		if got := r.metric(t, `loam_config_reloads_total{otel_scope_name="github.com/loamhq/loam/service",otel_scope_schema_url="",otel_scope_version="",result="`+result+`"}`); got != n {
			t.Errorf("loam.config.reloads{result=%s} = %v, want %v", result, got, n)
		}
	}
}

// TestReloadUnderLoad replaces the role policy while calls flow: no call
// fails, and the new policy holds once Reload returns.
func TestReloadUnderLoad(t *testing.T) {
	r := start(t, ruledConfig("reader"), stub(), trustRoles)
	var failed, ok atomic.Int64
	var firstErr atomic.Value
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := 0; i < 5000 && !stop.Load(); i++ {
				if err := callAs(context.Background(), r, "reader"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	for ok.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	for i := range 10 {
		// The reader keeps its permission; writer gains it and loses it.
		next := ruledConfig("reader")
		if i%2 == 0 {
			next.Authz.Roles["writer"] = []string{"stubs.call"}
		}
		if err := r.srv.Reload(next); err != nil {
			t.Fatalf("Reload() = %v", err)
		}
		err := callAs(t.Context(), r, "writer")
		if granted := i%2 == 0; granted != (err == nil) {
			t.Errorf("writer after reload %d = %v, want granted=%v", i, err, granted)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed during reloads, first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	t.Logf("%d calls across 10 reloads, none failed", ok.Load())
}
