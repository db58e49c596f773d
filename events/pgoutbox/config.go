package pgoutbox

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/loamhq/loam/config"
)

// Defaults applied by New to zero fields of Config. A Config loaded with
// config.Load has them already, from the `default` tags.
const (
	DefaultSchema         = "public"
	DefaultTable          = "loam_outbox"
	DefaultMaxConns       = 4
	DefaultBatchSize      = 256
	DefaultPollInterval   = time.Second
	DefaultLockInterval   = 2 * time.Second
	DefaultTimeout        = 30 * time.Second
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	// DefaultRetention is the `retention` of a Config loaded with
	// config.Load. A Config built in code with Retention zero deletes rows
	// as soon as they are sent.
	DefaultRetention = time.Hour
)

// Config is the outbox's configuration: the `outbox` part of the events
// section (events.outbox). The zero value, given a URL, writes to the table
// public.loam_outbox, which New creates, refuses to publish outside a
// transaction, and runs a relay that deletes rows once they are sent.
type Config struct {
	// Enabled makes eventbus wrap the driver named by events.driver in the
	// outbox. New ignores it.
	Enabled bool `koanf:"enabled"`
	// URL is the PostgreSQL database that holds the outbox table, as a
	// postgres:// URL or a key=value connection string, without the
	// password. It is the application's own database: the events are
	// written in its transactions.
	URL string `koanf:"url"`
	// Password authenticates the connection, overriding any in the
	// environment (PGPASSWORD) or a .pgpass file.
	Password config.Secret `koanf:"password"`
	// Schema and Table name the outbox table: lower-case letters, digits
	// and '_'.
	Schema string `koanf:"schema" default:"public"`
	Table  string `koanf:"table" default:"loam_outbox"`
	// MaxConns caps the Broker's own connection pool, which creates the
	// table and serves the publishes made outside a transaction (dead
	// letters, allow_without_tx). The relay has a connection of its own.
	MaxConns int `koanf:"max_conns" default:"4" validate:"min=0"`
	// SkipMigration leaves the table to the service's own migrations (see
	// SchemaSQL): New then neither creates nor checks it.
	SkipMigration bool `koanf:"skip_migration"`
	// AllowWithoutTx lets a publish whose context carries no transaction
	// write its events in a transaction of its own, instead of failing
	// with ErrNoTx. Such events are not tied to any business change; turn
	// it on for scripts and tests, not for services.
	AllowWithoutTx bool `koanf:"allow_without_tx"`
	// DisableNotify stops publishes from sending a NOTIFY to wake the
	// relay, which then finds new events by polling alone, every
	// relay.poll_interval. NOTIFY makes committing transactions take a
	// lock of the database's notification queue in turn; turn it off when
	// that shows in commit latency.
	DisableNotify bool `koanf:"disable_notify"`
	// Relay configures the relay of this process.
	Relay RelayConfig `koanf:"relay"`
}

// RelayConfig configures the relay, which sends committed events through
// the wrapped broker. Every process may run one; one at a time relays.
type RelayConfig struct {
	// Disabled runs no relay in this process: it only writes events, and
	// another process relays them.
	Disabled bool `koanf:"disabled"`
	// BatchSize is how many events the relay reads and sends at once.
	BatchSize int `koanf:"batch_size" default:"256" validate:"min=0"`
	// PollInterval is how long the relay waits for a notification before
	// it looks for new events anyway.
	PollInterval time.Duration `koanf:"poll_interval" default:"1s" validate:"min=0s"`
	// LockInterval is how often a process whose relay stands by tries to
	// take over from the one that relays: the longest failover after the
	// relaying process dies.
	LockInterval time.Duration `koanf:"lock_interval" default:"2s" validate:"min=0s"`
	// Timeout bounds each of the relay's queries and each send through the
	// wrapped broker.
	Timeout time.Duration `koanf:"timeout" default:"30s" validate:"min=0s"`
	// InitialBackoff and MaxBackoff bound the exponential backoff, with
	// jitter, between failed attempts to send a batch or to reconnect.
	InitialBackoff time.Duration `koanf:"initial_backoff" default:"100ms" validate:"min=0s"`
	MaxBackoff     time.Duration `koanf:"max_backoff" default:"10s" validate:"min=0s"`
	// Retention is how long a sent event stays in the table, marked sent,
	// before the relay deletes it; zero deletes it as soon as it is sent.
	Retention time.Duration `koanf:"retention" default:"1h" validate:"min=0s"`
	// StopTimeout bounds how long Close waits for the batch in flight to be
	// sent and marked; events left unmarked are sent again by the next
	// relay.
	StopTimeout time.Duration `koanf:"stop_timeout" default:"10s" validate:"min=0s"`
}

// ErrInvalidConfig is wrapped by every error of Validate.
var ErrInvalidConfig = errors.New("pgoutbox: invalid configuration")

// identPattern is a schema or table name that needs no quoting.
var identPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// maxTableLen leaves room in PostgreSQL's 63 bytes for the index name,
// the table's name followed by "_pending".
const maxTableLen = 55

// Validate reports every problem of c, joined, each naming its full key in
// a service's configuration, such as "events.outbox.url". Zero numbers
// mean their defaults. New calls it.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: events.outbox.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.URL == "" && c.Enabled:
		bad("url", "required when events.outbox.enabled is true")
	case c.URL != "":
		if problem := checkURL(c.URL); problem != "" {
			bad("url", "%s", problem)
		}
	}
	if c.Schema != "" && (!identPattern.MatchString(c.Schema) || len(c.Schema) > 63) {
		bad("schema", "%q is not a name of at most 63 lower-case letters, digits and '_'", c.Schema)
	}
	if c.Table != "" && (!identPattern.MatchString(c.Table) || len(c.Table) > maxTableLen) {
		bad("table", "%q is not a name of at most %d lower-case letters, digits and '_'", c.Table, maxTableLen)
	}
	if c.MaxConns < 0 {
		bad("max_conns", "%d is negative", c.MaxConns)
	}
	r := c.Relay
	if r.BatchSize < 0 {
		bad("relay.batch_size", "%d is negative", r.BatchSize)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"relay.poll_interval", r.PollInterval}, {"relay.lock_interval", r.LockInterval},
		{"relay.timeout", r.Timeout}, {"relay.initial_backoff", r.InitialBackoff},
		{"relay.max_backoff", r.MaxBackoff}, {"relay.retention", r.Retention},
		{"relay.stop_timeout", r.StopTimeout},
	} {
		if d.v < 0 {
			bad(d.key, "%v is negative", d.v)
		}
	}
	if r.MaxBackoff > 0 && r.MaxBackoff < r.InitialBackoff {
		bad("relay.max_backoff", "%v is below initial_backoff %v", r.MaxBackoff, r.InitialBackoff)
	}
	return errors.Join(errs...)
}

// passwordPattern finds a password in a key=value connection string.
var passwordPattern = regexp.MustCompile(`(^|\s)password\s*=`)

// checkURL returns what is wrong with a connection string, or "".
func checkURL(s string) string {
	var password bool
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return "is not a valid URL"
		}
		_, password = u.User.Password()
		password = password || u.Query().Has("password")
	} else if !strings.Contains(s, "=") {
		return "is not a postgres:// URL or a key=value connection string"
	} else {
		password = passwordPattern.MatchString(s)
	}
	if password {
		return "holds a password; set it in events.outbox.password, a secret, so that it never prints"
	}
	return ""
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	r := &c.Relay
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&r.PollInterval, DefaultPollInterval}, {&r.LockInterval, DefaultLockInterval},
		{&r.Timeout, DefaultTimeout}, {&r.InitialBackoff, DefaultInitialBackoff},
		{&r.StopTimeout, DefaultStopTimeout},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(DefaultMaxBackoff, r.InitialBackoff)
	}
	if r.BatchSize == 0 {
		r.BatchSize = DefaultBatchSize
	}
	return c
}
