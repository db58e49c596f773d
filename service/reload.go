package service

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/loamhq/loam/authz"
)

// liveKeys are the configuration keys, or key prefixes ending in ".", that
// Reload applies while the server runs. Every other key needs a restart.
var liveKeys = []string{
	"authz.",
	"telemetry.log_level",
	"service.faults.",
	"service.limits.max_concurrent_calls",
	"service.limits.default_call_timeout",
	"service.limits.rate_limits",
}

func isLive(key string) bool {
	return slices.ContainsFunc(liveKeys, func(k string) bool {
		return key == k || (strings.HasSuffix(k, ".") && strings.HasPrefix(key, k))
	})
}

// Reload applies cfg to the running server, as far as a running server can
// change: the role policy and the access rules (authz), the log level, fault
// injection, and the limits Loam enforces itself (max_concurrent_calls,
// default_call_timeout, rate_limits). A key that needs a restart (an
// address, a gRPC limit, an issuer, a rule change that would make a method
// public or private) keeps its running value, and Reload logs a warning
// naming it. Every reload that changes something is logged with the keys it
// applied, and counted in loam.config.reloads by result (applied,
// unchanged, rejected).
//
// Reload is all or nothing for what it applies: when cfg is invalid, or its
// rules or conditions do not compile, it changes nothing and returns why.
// Call it from config.Watch. It is safe for concurrent use; calls are
// applied one at a time. Before Check, Listen or Serve it only validates.
func (s *Server) Reload(cfg Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	err := s.reload(cfg)
	switch {
	case errors.Is(err, errUnchanged):
		s.countReload(context.Background(), "unchanged")
		return nil
	case err != nil:
		s.countReload(context.Background(), "rejected")
		s.log.Error("config reload rejected; the running configuration stays", "error", err)
		return err
	}
	s.countReload(context.Background(), "applied")
	return nil
}

var errUnchanged = errors.New("unchanged")

func (s *Server) reload(next Config) error {
	if err := next.Validate(); err != nil {
		return err
	}
	next.Service = next.Service.withDefaults()
	s.mu.Lock()
	prepared := s.prepared && s.prepareErr == nil
	s.mu.Unlock()
	if !prepared {
		return errors.New("service: Reload before the server was built by Check, Listen or Serve")
	}
	cur := s.running
	changed := changedKeys(cur, next)
	if len(changed) == 0 {
		return errUnchanged
	}
	var applied, restart []string
	for _, k := range changed {
		if isLive(k) {
			applied = append(applied, k)
		} else {
			restart = append(restart, k)
		}
	}
	// Build everything first, so that a failure changes nothing.
	run := cur
	var az *authz.Authorizer
	if slices.ContainsFunc(applied, func(k string) bool { return strings.HasPrefix(k, "authz.") }) {
		var err error
		az, err = authz.New(next.Authz, s.infos, authz.WithLogger(s.log), authz.WithMeterProvider(s.tel.MeterProvider()))
		if err != nil {
			return err
		}
		if !slices.Equal(az.PublicMethods(), s.authzNow.Load().PublicMethods()) {
			// Authentication and telemetry were built on the public
			// methods; changing them live would split the table.
			az = nil
			applied, restart = moveKeys(applied, restart, func(k string) bool { return strings.HasPrefix(k, "authz.") && k != "authz.roles" })
			if slices.Contains(applied, "authz.roles") {
				if err := s.authzNow.Load().SetPolicy(next.Authz.Roles); err != nil {
					return err
				}
				run.Authz.Roles = next.Authz.Roles
			}
		} else {
			run.Authz = next.Authz
		}
	}
	if slices.Contains(applied, "telemetry.log_level") {
		if err := s.tel.SetLogLevel(next.Telemetry.LogLevel); err != nil {
			return err
		}
		run.Telemetry.LogLevel = next.Telemetry.LogLevel
	}
	st := run.Service
	if len(next.Service.Limits.RateLimits) > 0 && !s.hasRates {
		applied, restart = moveKeys(applied, restart, func(k string) bool { return k == "service.limits.rate_limits" })
	} else {
		st.Limits.RateLimits = next.Service.Limits.RateLimits
	}
	if next.Service.Faults.Enabled && !s.hasFaults {
		applied, restart = moveKeys(applied, restart, func(k string) bool { return strings.HasPrefix(k, "service.faults.") })
	} else {
		st.Faults = next.Service.Faults
	}
	st.Limits.MaxConcurrentCalls = next.Service.Limits.MaxConcurrentCalls
	st.Limits.DefaultCallTimeout = next.Service.Limits.DefaultCallTimeout
	run.Service = st

	if az != nil {
		s.authzNow.Store(az)
	}
	s.live.Store(s.liveState(run.Service))
	s.running = run
	if len(applied) > 0 {
		s.log.Info("config reloaded", "applied", applied)
	}
	if len(restart) > 0 {
		s.log.Warn("config changes that take effect only after a restart", "keys", restart)
	}
	return nil
}

// moveKeys moves the keys of from that match to to.
func moveKeys(from, to []string, match func(string) bool) ([]string, []string) {
	var keep []string
	for _, k := range from {
		if match(k) {
			to = append(to, k)
		} else {
			keep = append(keep, k)
		}
	}
	slices.Sort(to)
	return keep, to
}

func (s *Server) countReload(ctx context.Context, result string) {
	s.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}

// changedKeys returns, sorted, the configuration keys whose values differ
// between a and b. Lists and maps count as one key each.
func changedKeys(a, b Config) []string {
	fa, fb := map[string]any{}, map[string]any{}
	flatten("", reflect.ValueOf(a), fa)
	flatten("", reflect.ValueOf(b), fb)
	var out []string
	for k := range fa {
		if !reflect.DeepEqual(fa[k], fb[k]) {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// flatten records the leaves of v by their koanf key.
func flatten(prefix string, v reflect.Value, out map[string]any) {
	if v.Kind() != reflect.Struct || !isSection(v.Type()) {
		out[strings.TrimSuffix(prefix, ".")] = v.Interface()
		return
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		if name == "" && !f.Anonymous {
			continue
		}
		p := prefix
		if name != "" {
			p += name + "."
		}
		flatten(p, v.Field(i), out)
	}
}

// isSection reports whether a struct type is a configuration section to
// walk into (its fields carry koanf tags) rather than a value such as
// time.Time or config.Secret.
func isSection(t reflect.Type) bool {
	for i := range t.NumField() {
		if _, ok := t.Field(i).Tag.Lookup("koanf"); ok {
			return true
		}
	}
	return false
}
