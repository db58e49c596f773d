package authn_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

// clock is a settable clock for refetch intervals.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logs records the "reason" attribute of every log record.
type logs struct {
	mu      sync.Mutex
	reasons []string
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			l.reasons = append(l.reasons, a.Value.String())
		}
		return true
	})
	return nil
}
func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }

// take returns the reasons logged since the last take.
func (l *logs) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.reasons
	l.reasons = nil
	return r
}

func issuerConfig(iss *authntest.Issuer) authn.IssuerConfig {
	return authn.IssuerConfig{URL: iss.URL, Audiences: []string{authntest.Audience}}
}

// newAuthn starts an Authenticator for iss with a 30s leeway, a 1m refetch
// interval and cfg changed by edit.
func newAuthn(t testing.TB, iss *authntest.Issuer, edit func(*authn.Config), opts ...authn.Option) *authn.Authenticator {
	t.Helper()
	cfg := authn.Config{
		Issuers:             []authn.IssuerConfig{issuerConfig(iss)},
		Leeway:              30 * time.Second,
		JWKSRefetchInterval: time.Minute,
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := authn.New(cfg, opts...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

func startIssuer(t testing.TB, keys ...*authntest.Key) *authntest.Issuer {
	t.Helper()
	iss := authntest.Start(keys...)
	t.Cleanup(iss.Close)
	return iss
}

func fmtV(v any) string { return fmt.Sprintf("%+v", v) }
