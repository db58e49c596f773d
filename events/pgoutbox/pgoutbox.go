package pgoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
)

// ErrNoTx is returned, wrapped, by a publish whose context carries no
// transaction (see NewContext), unless Config.AllowWithoutTx is set.
var ErrNoTx = errors.New("pgoutbox: no transaction in the context: publish with pgoutbox.NewContext(ctx, tx)")

type txKey struct{}

// NewContext returns a copy of ctx that carries tx: a publish with it
// writes its events into the outbox inside tx, so they are committed, and
// then relayed, exactly when tx commits, and never when it rolls back. tx
// must be a transaction on the database that holds the outbox table.
func NewContext(ctx context.Context, tx pgx.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// FromContext returns the transaction that ctx carries, if any.
func FromContext(ctx context.Context) (pgx.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(pgx.Tx)
	return tx, ok && tx != nil
}

// Option configures New with what a configuration file cannot hold.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	pool    *pgxpool.Pool
	logger  *slog.Logger
	tracers trace.TracerProvider
	meters  metric.MeterProvider
	// afterSend, set by tests, runs between a batch's send and its marking.
	afterSend func(*pgx.Conn)
}

// WithPool makes the Broker use pool, such as the one the application runs
// its transactions on, instead of connecting to Config.URL. The Broker does
// not close it. Its relay still opens one connection of its own, with
// pool's settings, to hold the relay's lock and listen for notifications.
func WithPool(pool *pgxpool.Pool) Option {
	return optionFunc(func(o *options) { o.pool = pool })
}

// WithLogger sets the logger of the relay's failures and changes of
// leader. The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithTracerProvider sets where the relay's spans go. The default records
// nothing.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) {
		if tp != nil {
			o.tracers = tp
		}
	})
}

// WithMeterProvider sets where the outbox's metrics go. The default records
// nothing.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) {
		if mp != nil {
			o.meters = mp
		}
	})
}

var _ driver.Broker = (*Broker)(nil)

// Broker is a driver.Broker that writes the events sent to its topics into
// the outbox table, and relays them to the Broker it wraps. Create it with
// New and hand it to events.NewBus.
type Broker struct {
	inner   driver.Broker
	cfg     Config
	q       *queries
	pool    *pgxpool.Pool
	ownPool bool
	log     *slog.Logger
	tel     *instruments
	relay   *relay // nil when disabled

	mu     sync.Mutex
	closed bool
	topics map[string]driver.Topic // the wrapped broker's, shared with the relay
}

// New returns a Broker over the outbox table that cfg names, wrapping
// inner. It connects (or uses WithPool's pool), creates the table unless
// cfg.SkipMigration, and starts the relay unless cfg.Relay.Disabled.
//
// On success the Broker owns inner, and its Close closes inner; on error
// inner is still the caller's. New fails with an error wrapping
// ErrInvalidConfig for a bad cfg, and with the database's error, naming
// the setting at fault, when it cannot connect or create the table.
func New(ctx context.Context, inner driver.Broker, cfg Config, opts ...Option) (*Broker, error) {
	if inner == nil {
		return nil, fmt.Errorf("%w: nil broker to wrap", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := options{logger: slog.Default(), tracers: tracenoop.NewTracerProvider(), meters: metricnoop.NewMeterProvider()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	b := &Broker{inner: inner, cfg: cfg, q: newQueries(cfg), pool: o.pool, log: o.logger, topics: map[string]driver.Topic{}}
	if b.pool == nil {
		if cfg.URL == "" {
			return nil, fmt.Errorf("%w: events.outbox.url: required without pgoutbox.WithPool", ErrInvalidConfig)
		}
		pc, err := pgxpool.ParseConfig(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("%w: events.outbox.url: %w", ErrInvalidConfig, err)
		}
		if !cfg.Password.IsZero() {
			pc.ConnConfig.Password = cfg.Password.Reveal()
		}
		pc.MaxConns = int32(cfg.MaxConns)
		if pc.ConnConfig.RuntimeParams["application_name"] == "" {
			pc.ConnConfig.RuntimeParams["application_name"] = "loam-outbox"
		}
		if b.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return nil, fmt.Errorf("pgoutbox: events.outbox.url: %w", err)
		}
		b.ownPool = true
	}
	fail := func(err error) (*Broker, error) {
		if b.ownPool {
			b.pool.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := b.pool.Ping(ctx); err != nil {
		return fail(fmt.Errorf("pgoutbox: connecting to events.outbox.url: %w", err))
	}
	if !cfg.SkipMigration {
		if err := b.q.migrate(ctx, b.pool, cfg.Schema); err != nil {
			return fail(fmt.Errorf("pgoutbox: creating the outbox table %s (events.outbox.table): %w", b.q.table, err))
		}
	}
	if !cfg.Relay.Disabled {
		b.relay = newRelay(b, o.afterSend)
	}
	tel, err := newInstruments(o, cfg.Schema+"."+cfg.Table, inner.Capabilities().System, b.relay)
	if err != nil {
		return fail(fmt.Errorf("pgoutbox: creating instruments: %w", err))
	}
	b.tel = tel
	if b.relay != nil {
		go b.relay.run()
	}
	return b, nil
}

// Capabilities reports the wrapped broker's: subscriptions are its, and
// the relay keeps the order of each key (see the package documentation on
// what that order is).
func (b *Broker) Capabilities() driver.Capabilities { return b.inner.Capabilities() }

// OpenTopic opens the topic on the wrapped broker too, so that it is
// provisioned, and a name the broker refuses fails, before events are
// written; afterwards, sending needs only the database.
func (b *Broker) OpenTopic(ctx context.Context, name string) (driver.Topic, error) {
	if b.isClosed() {
		return nil, driver.ErrClosed
	}
	if _, err := b.innerTopic(ctx, name); err != nil {
		return nil, err
	}
	return &topic{b: b, name: name}, nil
}

// OpenSubscription opens a subscription of the wrapped broker: the outbox
// is on the sending side only.
func (b *Broker) OpenSubscription(ctx context.Context, topic string, cfg driver.SubscriptionConfig) (driver.Subscription, error) {
	if b.isClosed() {
		return nil, driver.ErrClosed
	}
	return b.inner.OpenSubscription(ctx, topic, cfg)
}

// Close stops the relay, letting the batch in flight be sent and marked
// within relay.stop_timeout, then closes the wrapped broker and the
// Broker's own pool (not one given by WithPool). Events not yet relayed
// stay in the table for the next relay. Sending afterwards returns
// driver.ErrClosed.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	if b.relay != nil {
		b.relay.stop(b.cfg.Relay.StopTimeout)
	}
	var errs []error
	b.mu.Lock()
	for _, t := range b.topics {
		errs = append(errs, t.Close())
	}
	b.topics = nil
	b.mu.Unlock()
	errs = append(errs, b.tel.reg.Unregister(), b.inner.Close())
	if b.ownPool {
		b.pool.Close()
	}
	return errors.Join(errs...)
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// innerTopic returns the wrapped broker's topic name, opening it on first
// use. The relay calls it after Close has begun, until it stops.
func (b *Broker) innerTopic(ctx context.Context, name string) (driver.Topic, error) {
	b.mu.Lock()
	t, ok := b.topics[name]
	gone := b.topics == nil
	b.mu.Unlock()
	switch {
	case gone:
		return nil, driver.ErrClosed
	case ok:
		return t, nil
	}
	t, err := b.inner.OpenTopic(ctx, name)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if prev, ok := b.topics[name]; ok || b.topics == nil { // opened meanwhile, or closed
		t.Close()
		if !ok {
			return nil, driver.ErrClosed
		}
		return prev, nil
	}
	b.topics[name] = t
	return t, nil
}

// topic writes the events sent to it into the outbox.
type topic struct {
	b    *Broker
	name string

	mu     sync.Mutex
	closed bool
}

// Send inserts ms into the outbox, in order, inside the transaction that
// ctx carries (see NewContext), and returns once the insert is done: the
// events are then part of the transaction, and are relayed once it
// commits. Without a transaction it fails with ErrNoTx, unless
// Config.AllowWithoutTx is set or ms are dead letters (which package
// events publishes when a handler gives up, outside any transaction of the
// application), which are then inserted and committed at once.
func (t *topic) Send(ctx context.Context, ms []*driver.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed || t.b.isClosed() {
		return driver.ErrClosed
	}
	if len(ms) == 0 {
		return nil
	}
	args, err := t.b.insertArgs(t.name, ms)
	if err != nil {
		return err
	}
	sql := t.b.q.insertNotify
	if t.b.cfg.DisableNotify {
		sql = t.b.q.insert
		args = args[:5]
	}
	if tx, ok := FromContext(ctx); ok {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &txError{err: err}
		}
		return nil
	}
	if !t.b.cfg.AllowWithoutTx && !deadLetters(ms) {
		return ErrNoTx
	}
	if _, err := t.b.pool.Exec(ctx, sql, args...); err != nil {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case t.b.isClosed():
			return driver.ErrClosed
		}
		return fmt.Errorf("pgoutbox: writing to %s: %w", t.b.q.table, err)
	}
	return nil
}

// deadLetters reports whether every one of ms is a dead letter of package
// events.
func deadLetters(ms []*driver.Message) bool {
	for _, m := range ms {
		if _, ok := m.Header[events.HeaderDeadLetterCause]; !ok {
			return false
		}
	}
	return true
}

// insertArgs returns the arguments of the insert of ms to topic, or an
// error wrapping events.ErrInvalid for a string that PostgreSQL's text
// cannot hold.
func (b *Broker) insertArgs(topic string, ms []*driver.Message) ([]any, error) {
	ids := make([]string, len(ms))
	keys := make([]string, len(ms))
	headers := make([]string, len(ms))
	bodies := make([][]byte, len(ms))
	for i, m := range ms {
		if !storable(m.ID) || !storable(m.Key) {
			return nil, fmt.Errorf("%w: pgoutbox: the ID or key of event %q is not UTF-8 without NUL bytes, as PostgreSQL text must be", events.ErrInvalid, m.ID)
		}
		for k, v := range m.Header {
			if !storable(k) || !storable(v) {
				return nil, fmt.Errorf("%w: pgoutbox: header %q of event %q is not UTF-8 without NUL bytes, as PostgreSQL text must be", events.ErrInvalid, k, m.ID)
			}
		}
		h := m.Header
		if h == nil {
			h = map[string]string{}
		}
		j, err := json.Marshal(h)
		if err != nil {
			return nil, fmt.Errorf("pgoutbox: encoding the header of event %q: %w", m.ID, err)
		}
		ids[i], keys[i], headers[i], bodies[i] = m.ID, m.Key, string(j), m.Body
		if bodies[i] == nil {
			bodies[i] = []byte{}
		}
	}
	return []any{topic, ids, keys, headers, bodies, b.q.channel}, nil
}

func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// IsRetryable reports whether err is transient: a connection lost or
// refused, a timeout, a server shutting down or starting, a serialization
// failure or deadlock. An error of a Send inside the caller's transaction
// is never retryable: the transaction is broken, and only the application
// can run it again.
func (t *topic) IsRetryable(err error) bool { return isRetryable(err) }

func isRetryable(err error) bool {
	var txErr *txError
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &txErr), errors.Is(err, ErrNoTx), errors.Is(err, events.ErrInvalid), errors.Is(err, driver.ErrClosed):
		return false
	case errors.As(err, &pgErr):
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"), // insufficient resources
			strings.HasPrefix(pgErr.Code, "57"), // operator intervention: shutdown, cancel
			pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "55P03":
			return true
		}
		return false
	case errors.As(err, &connErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded),
		pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	return false
}

// Close makes Send return driver.ErrClosed. The wrapped broker's topic
// stays open for the relay until the Broker closes.
func (t *topic) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return nil
}

// txError is the error of a Send in the caller's transaction.
type txError struct{ err error }

func (e *txError) Error() string {
	return "pgoutbox: writing to the outbox in the caller's transaction: " + e.err.Error()
}
func (e *txError) Unwrap() error { return e.err }
