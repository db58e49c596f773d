package pgdb_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/examples/internal/pgdb"
	"github.com/loamhq/loam/internal/testenv"
)

func TestOpen(t *testing.T) {
	pool, err := pgdb.Open(t.Context(), "impact.database", pgdb.Config{URL: testenv.Postgres.URL(t), MaxConns: 2}, "pgdb-test")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got := pool.Config().MaxConns; got != 2 {
		t.Errorf("MaxConns = %d, want 2", got)
	}
	var app string
	if err := pool.QueryRow(t.Context(), "SHOW application_name").Scan(&app); err != nil || app != "pgdb-test" {
		t.Errorf("application_name = %q, %v; want pgdb-test", app, err)
	}
}

func TestOpenFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  pgdb.Config
		want string
	}{
		{"no URL", pgdb.Config{}, "impact.database.url: required"},
		{"a password in the URL", pgdb.Config{URL: "postgres://impact:hunter2@db:5432/impact"}, "impact.database.url: holds a password; set it in impact.database.password"},
		{"not a URL", pgdb.Config{URL: "postgres://db:notaport/impact"}, "impact.database.url:"},
		{"nobody listening", pgdb.Config{URL: "postgres://impact@127.0.0.1:1/impact?connect_timeout=2", Password: config.NewSecret("hunter2")}, "connecting to impact.database.url"},
	} {
		_, err := pgdb.Open(ctx, "impact.database", tc.cfg, "pgdb-test")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: Open() = %v, want an error containing %q and no password", tc.name, err, tc.want)
		}
	}
}

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection lost", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"no such table", &pgconn.PgError{Code: "42P01"}, false},
		{"duplicate key", &pgconn.PgError{Code: "23505"}, false},
		{"cancelled", context.Canceled, false},
		{"another error", errors.New("capture not found"), false},
	} {
		got := pgdb.Unavailable(tc.err)
		if errors.Is(got, pgdb.ErrUnavailable) != tc.want || !errors.Is(got, tc.err) {
			t.Errorf("%s: Unavailable(%v) = %v; want ErrUnavailable %v, and the error kept", tc.name, tc.err, got, tc.want)
		}
	}
	if pgdb.Unavailable(nil) != nil {
		t.Error("Unavailable(nil) != nil")
	}
}
