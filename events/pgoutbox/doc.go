// Package pgoutbox is the PostgreSQL transactional outbox of package
// events, on pgx v5: a driver.Broker that wraps another, writes the events
// published to it into an outbox table inside the application's own
// transaction, and relays the committed ones through the wrapped broker.
//
// An event is then committed exactly when the business change it reports
// is: a service that writes an order and publishes OrderPlaced in one
// transaction never tells the world about an order it rolled back, and
// never loses the event of an order it committed, whether the broker is up
// at that moment or not.
//
//	nats, err := natsjs.New(ctx, natsCfg)
//	outbox, err := pgoutbox.New(ctx, nats, pgoutbox.Config{}, pgoutbox.WithPool(db))
//	bus, err := events.NewBus(outbox, events.WithSource("//orders"))
//	placed, err := events.NewTopic[*orderspb.OrderPlaced](ctx, bus)
//
//	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, "INSERT INTO orders ...", ...); err != nil {
//			return err
//		}
//		return placed.Publish(pgoutbox.NewContext(ctx, tx), &orderspb.OrderPlaced{OrderId: id})
//	})
//
// Subscriptions, retries, dead letters, deduplication and tracing are those
// of package events over the wrapped driver, unchanged: the outbox is on
// the sending side only. eventbus opens it from configuration
// (events.outbox.enabled).
//
// Loam adds, on top of pgx: the table and its idempotent creation, the
// insert of a batch of events in one statement inside the caller's
// transaction, and a relay with a leader lock, wake-ups, backoff, ordering,
// retention, telemetry and a graceful stop.
//
// # Publishing
//
// A publish whose context carries a transaction (NewContext) inserts its
// events into the table inside that transaction and returns; they become
// visible to the relay when the transaction commits, and vanish if it rolls
// back. Publish's error is then the insert's, and is never retried by
// events: the transaction is aborted, and only the application can run it
// again. The transaction must be on the database that holds the table; it
// may come from any pool, such as the application's own.
//
// A publish without a transaction fails with ErrNoTx: an event written in
// a transaction of its own is not tied to any business change, which is
// what an outbox is for, so forgetting NewContext is an error rather than a
// silent, weaker publish. Config.AllowWithoutTx lifts that, for scripts and
// tests. Dead letters are the exception: package events publishes them
// when a handler gives up, outside any transaction of the application, and
// they go through the outbox in a statement of their own.
//
// # The relay
//
// Every Broker runs a relay (unless relay.disabled), and one at a time, in
// all the processes that share the table, relays: the one that holds a
// session-level advisory lock derived from the table's name. The others
// stand by and try to take the lock every relay.lock_interval. The lock
// goes with its connection, so when the relaying process exits, crashes or
// loses the database, another takes over within that interval. A relay
// that cannot say it is gone is found out too: its session asks the server
// for TCP keepalives of about half a minute (a machine that vanished) and,
// from PostgreSQL 14, for an idle_session_timeout of twice the longest
// pause the relay takes between queries, 86 seconds by default (a process
// that is stopped, or a network path that holds the connection open
// without passing data).
// The relay needs a session of its own (a direct connection, or session
// pooling): a transaction-pooling proxy cannot hold its lock or LISTEN.
//
// The relay reads the first relay.batch_size rows not marked sent, in seq
// order, sends them through the wrapped broker's topics (one Send per topic,
// with the events' own IDs, headers and bodies), and marks them sent (or
// deletes them, without retention). It keeps no cursor: seq numbers are
// drawn when rows are inserted and transactions commit in another order, so
// a row can become visible after rows with a higher seq were relayed; a
// relay reading "seq above the last one relayed" would skip it for good,
// while a relay reading "not yet marked" finds it in its next batch.
//
// A publishing transaction sends a NOTIFY, delivered on commit, that wakes
// the relay at once; the relay also looks every relay.poll_interval, so an
// event is found even when a notification is lost or disabled. PostgreSQL
// serializes the commits of transactions that NOTIFY, which costs about
// half of the commit throughput of small concurrent transactions on a busy
// database (BENCHMARKS.md); Config.DisableNotify with a short poll interval
// trades a few milliseconds of latency for it.
//
// A send that fails leaves its batch unmarked: the relay tries again, with
// exponential backoff and jitter (relay.initial_backoff to
// relay.max_backoff), starting again from the first unmarked row, so
// nothing is lost and nothing overtakes an earlier event while the broker
// is away. An event that the broker refuses for good (one too large for
// it, say) is retried the same way, logged as an error, and holds back the
// events after it until the broker accepts it or an operator deletes its
// row. A lost database connection makes the relay reconnect, with the same
// backoff, and contend for the lock again.
//
// Sent rows stay, marked, for relay.retention (one hour in configuration;
// zero deletes them as soon as they are sent), and the relay deletes them
// afterwards in bounded batches. The relay writes its marks without waiting
// for them to be flushed to disk: a mark lost in a database crash only
// sends its events again.
//
// # Guarantees
//
// Nothing committed is lost: an event whose transaction commits is sent,
// eventually, through the wrapped broker, whatever fails meanwhile. Nothing
// rolled back is sent: its row never becomes visible. Delivery is at
// least once: a relay that stops between a send and its mark (a crash, a
// lost connection, a Close past its stop timeout, a failover) leaves events
// that the next relay sends again, with the same IDs, which brokers that
// deduplicate (a JetStream stream's duplicate window) and subscribers
// (events' deduplication by ID) drop.
//
// Order: events are relayed in seq order, so the events of one key reach
// the broker in the order they were written when they were written by one
// transaction, or by transactions that committed one after the other (the
// second began after the first committed, as when each locks the key's
// row, such as the order's, before publishing). Subscribers then see them
// in that order where the wrapped driver keeps order per key
// (driver.Capabilities.OrderedPerKey, which the Broker reports as the
// wrapped driver's).
//
// Not guaranteed: an order across keys or topics; the order of events of
// one key written by concurrent transactions (the one that inserted first
// may commit last, and is then relayed last); exactly-once delivery; a
// bound on latency while the broker or the database is away. Events are as
// durable as the database: a commit that PostgreSQL loses (with
// synchronous_commit off, or a failover to a lagging replica) loses its
// events with its business change.
//
// # The table
//
// SchemaSQL shows the table: seq (the relay's order), topic, id, key,
// header (a JSON object of strings), body, created_at and sent_at. New
// creates it, and its index of unsent rows, unless skip_migration says the
// service's own migrations do. The table is an interface: a program in
// another language may insert events into it with plain SQL, and the relay
// sends them. Its rows are inserted and then updated or deleted once
// each, as in any queue table: leave autovacuum on.
//
// # Telemetry
//
// With WithMeterProvider, the outbox records loam.events.outbox.relayed
// (events the broker accepted from the relay, sends again included, by
// messaging.destination.name),
// loam.events.outbox.delay (seconds from insertion to the broker's
// acceptance), loam.events.outbox.failures (failed relay steps, by
// loam.events.outbox.step, send or database, and error.type), and the
// gauges loam.events.outbox.pending (committed events not yet relayed, as
// the relaying process last counted them), loam.events.outbox.lag (the age
// of the oldest of them, in seconds) and loam.events.outbox.leader (1 in
// the process that relays, 0 in the others); all carry
// loam.events.outbox.table. With WithTracerProvider, each Send of the relay
// runs in a producer span "relay <topic>", linked to the span that
// published each event. The events keep their own trace context, so a
// consumer's span still continues the trace of the request that published.
//
// # Configuration
//
// Config is the `outbox` part of the events section (events.outbox):
//
//	events:
//	  driver: nats
//	  outbox:
//	    enabled: true                   # wrap the driver in the outbox (eventbus)
//	    url: postgres://orders@db:5432/orders
//	    password: file:/run/secrets/db  # a config.Secret, never in the URL
//	    schema: public
//	    table: loam_outbox
//	    max_conns: 4                    # the Broker's own pool
//	    skip_migration: false           # true when SchemaSQL runs in the service's migrations
//	    allow_without_tx: false         # publish outside a transaction (scripts, tests)
//	    disable_notify: false           # find events by polling alone
//	    relay:
//	      disabled: false               # this process only writes
//	      batch_size: 256
//	      poll_interval: 1s
//	      lock_interval: 2s             # the longest failover
//	      timeout: 30s                  # each query, and each send through the broker
//	      initial_backoff: 100ms
//	      max_backoff: 10s
//	      retention: 1h                 # 0s deletes sent rows at once
//	      stop_timeout: 10s
//
// Validate names the full key of every problem, such as
// "events.outbox.relay.batch_size". WithPool replaces url, password and
// max_conns with the application's pool.
//
// # Errors
//
// New fails with an error wrapping ErrInvalidConfig for a bad Config, and
// with the database's error, naming the setting at fault, when it cannot
// connect or create the table. Publishing fails with ErrNoTx (wrapped by
// events) without a transaction; with an error wrapping events.ErrInvalid
// for an ID, key or header that PostgreSQL text cannot hold (invalid UTF-8,
// or a NUL byte); with the insert's error, which events does not retry,
// inside the caller's transaction; and with driver.ErrClosed after Close.
// A publish outside a transaction that fails for a transient reason (a
// lost connection, a timeout) is retried by events; if its first attempt
// committed without saying so, the event is relayed twice, with one ID.
// The relay's own failures are not returned to anyone: they are retried,
// logged and counted.
//
// # Concurrency and Close
//
// A Broker and its topics are safe for concurrent use. The Broker owns the
// wrapped broker and the pool it opened; a pool given with WithPool stays
// the caller's. Close (which events.Bus.Close calls) stops the relay, lets
// the batch in flight be sent and marked within relay.stop_timeout, and
// then closes the wrapped broker and the Broker's own pool. Events not yet
// relayed stay in the table for the next relay, in this process or
// another. After Close, OpenTopic, OpenSubscription and Send return
// driver.ErrClosed.
package pgoutbox
