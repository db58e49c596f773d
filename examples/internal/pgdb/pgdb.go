// Package pgdb opens the PostgreSQL pools of the example services, from
// the same settings every Loam service uses for a database: a URL without
// a password, the password as a secret, and a bound on connections.
package pgdb

import (
	"context"
	"fmt"
	"net/url"

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
