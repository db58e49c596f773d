package service

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"time"
)

// readinessTimeout bounds each readiness check.
const readinessTimeout = 3 * time.Second

// admin is the admin HTTP server: metrics, liveness, readiness, pprof.
type admin struct {
	srv    *http.Server
	s      *Server
	mu     sync.Mutex
	checks map[string]func(context.Context) error
}

func newAdmin(s *Server, withPprof bool) *admin {
	a := &admin{s: s, checks: map[string]func(context.Context) error{}}
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
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return a
}

func (a *admin) addCheck(name string, check func(context.Context) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks[name] = check
}

func (a *admin) serve(ln net.Listener) error { return a.srv.Serve(ln) }

func (a *admin) shutdown(ctx context.Context) error { return a.srv.Shutdown(ctx) }

// readyz answers 200 when the server is serving and every check passes or
// reports itself only degraded, 503 otherwise, with a JSON body naming each
// check's result. A check's error is degraded when it has a method
// Degraded() bool that returns true, as the authn and cache checks do when
// their dependency is down but the service still serves.
func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	names := make([]string, 0, len(a.checks))
	for n := range a.checks {
		names = append(names, n)
	}
	checks := make([]func(context.Context) error, len(names))
	sort.Strings(names)
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
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
			defer cancel()
			msg, state := "ok", "ready"
			if err := check(ctx); err != nil {
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
		}()
	}
	wg.Wait()
	w.Header().Set("Content-Type", "application/json")
	if res.Status != "ready" && res.Status != "degraded" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(res)
}
