// Package pgdb opens the PostgreSQL pools of the example services, from
// the same settings every Loam service uses for a database: a URL without
// a password, the password as a secret, and a bound on connections.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loamhq/loam/config"
)

// Config is a database section of a service's configuration.
type Config struct {
	// URL is a postgres:// URL or key=value connection string, without the
	// password. Empty means no database.
	URL string `koanf:"url"`
	// Password is the database password, as a secret (such as
	// "file:/run/secrets/db" or "env:DB_PASSWORD").
	Password config.Secret `koanf:"password"`
	// MaxConns bounds the pool; zero means 4.
	MaxConns int `koanf:"max_conns" validate:"min=0"`
}

// Open opens a pool on cfg and checks that the database answers. key is the
// configuration key of cfg, such as "impact.database", to name it in
// errors; app is the application_name the server shows for its sessions.
func Open(ctx context.Context, key string, cfg Config, app string) (*pgxpool.Pool, error) {
	if cfg.URL == "" {
		// pgx would fill in its defaults (the local server, $PGUSER):
		// never a database nobody named.
		return nil, fmt.Errorf("%s.url: required", key)
	}
	if u, err := url.Parse(cfg.URL); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return nil, fmt.Errorf("%s.url: holds a password; set it in %s.password, a secret, so that it never prints", key, key)
		}
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%s.url: %w", key, err)
	}
	if !cfg.Password.IsZero() {
		pc.ConnConfig.Password = cfg.Password.Reveal()
	}
	pc.MaxConns = 4
	if cfg.MaxConns > 0 {
		pc.MaxConns = int32(cfg.MaxConns)
	}
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = app
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("%s.url: %w", key, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to %s.url: %w", key, err)
	}
	return pool, nil
}

// ErrUnavailable is wrapped by Unavailable around the errors of a database
// that cannot be reached or is going away: the same call may succeed later,
// and services answer it with codes.Unavailable.
var ErrUnavailable = errors.New("database unavailable")

// Unavailable returns err wrapped in ErrUnavailable when it is a failure of
// the connection or the server rather than of the statement: no
// connection, a connection lost or timed out, the server shutting down or
// out of resources. Other errors, nil included, come back as they are.
func Unavailable(err error) error {
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &pgErr):
		if c := pgErr.Code; !strings.HasPrefix(c, "08") && !strings.HasPrefix(c, "53") && !strings.HasPrefix(c, "57") {
			return err
		}
	case errors.As(err, &connErr), errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		pgconn.Timeout(err), pgconn.SafeToRetry(err):
	default:
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
