package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"time"
)

// readinessTimeout bounds each readiness check; /readyz answers within it
// even when a check ignores its context. A variable for tests.
var readinessTimeout = 3 * time.Second

// Timeouts of the admin server.
const (
	// adminReadTimeout bounds reading a request, headers and body.
	adminReadTimeout = 5 * time.Second
	// adminWriteTimeout bounds writing a response: long enough for a
	// 30-second CPU profile from /debug/pprof/profile.
	adminWriteTimeout = 60 * time.Second
	// adminIdleTimeout closes keep-alive connections idle for this long.
	adminIdleTimeout = 60 * time.Second
)

// admin is the admin HTTP server: metrics, liveness, readiness, pprof.
type admin struct {
	srv    *http.Server
	s      *Server
	mu     sync.Mutex
	checks map[string]*check
}

// check is a readiness check and, while it runs, the channel its result
// will come on. A check that has not answered by the next request is not
// started again: the request waits for the same run, so a check that
// hangs costs one goroutine, not one per request.
type check struct {
	fn      func(context.Context) error
	running chan struct{} // closed when the run ends; nil when idle
	err     error         // the result of the last run
}

func newAdmin(s *Server, withPprof bool) *admin {
	a := &admin{s: s, checks: map[string]*check{}}
	mux := http.NewServeMux()
	if h := s.tel.MetricsHandler(); h != nil {
		mux.Handle("GET /metrics", h)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	a.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: adminReadTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
	}
	return a
}

func (a *admin) addCheck(name string, fn func(context.Context) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks[name] = &check{fn: fn}
}

func (a *admin) serve(ln net.Listener) error { return a.srv.Serve(ln) }

// shutdown stops the admin server: it closes idle connections at once and
// waits for requests in flight until ctx ends, then closes the rest.
func (a *admin) shutdown(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		a.srv.Close()
	}
	return err
}

// run returns the result of one run of c, starting one unless one is
// still going, and waiting at most until ctx ends.
func (a *admin) run(ctx context.Context, c *check) error {
	a.mu.Lock()
	done := c.running
	if done == nil {
		done = make(chan struct{})
		c.running = done
		go func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readinessTimeout)
			defer cancel()
			err := c.fn(cctx)
			a.mu.Lock()
			c.err, c.running = err, nil
			a.mu.Unlock()
			close(done)
		}()
	}
	a.mu.Unlock()
	select {
	case <-done:
		a.mu.Lock()
		defer a.mu.Unlock()
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("did not answer within %s", readinessTimeout)
	}
}

// readyz answers 200 when the server is serving and every check passes or
// reports itself only degraded, 503 otherwise, with a JSON body naming each
// check's result. A check's error is degraded when it has a method
// Degraded() bool that returns true, as the authn and cache checks do when
// their dependency is down but the service still serves.
func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	names := slices.Sorted(maps.Keys(a.checks))
	checks := make([]*check, len(names))
	for i, n := range names {
		checks[i] = a.checks[n]
	}
	a.mu.Unlock()

	type result struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks,omitempty"`
	}
	res := result{Status: "ready", Checks: map[string]string{}}
	if a.s.isDraining() {
		res.Status = "draining"
	}
	ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, c := range checks {
		wg.Go(func() {
			msg, state := "ok", "ready"
			if err := a.run(ctx, c); err != nil {
				msg, state = err.Error(), "not ready"
				var d interface{ Degraded() bool }
				if errors.As(err, &d) && d.Degraded() {
					msg, state = "degraded: "+msg, "degraded"
				}
			}
			mu.Lock()
			res.Checks[names[i]] = msg
			switch {
			case state == "not ready" && res.Status != "draining":
				res.Status = state
			case state == "degraded" && res.Status == "ready":
				res.Status = state
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	w.Header().Set("Content-Type", "application/json")
	if res.Status != "ready" && res.Status != "degraded" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(res)
}
