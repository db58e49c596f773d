package pgoutbox

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SchemaSQL returns the SQL that creates the outbox table schema.table (the
// defaults when empty) and its index, idempotently, for a service that
// runs its own migrations and sets Config.SkipMigration. New runs the same
// statements otherwise.
//
// The table is the outbox's interface, so other programs may write events
// into it with plain SQL: topic, id (the CloudEvents ID), key (the ordering
// key, empty for none), header (a JSON object of strings: the CloudEvents attributes
// in binary content mode and the trace context) and body. seq orders the
// events; created_at and sent_at are the relay's.
func SchemaSQL(schema, table string) string {
	q := newQueries(Config{Schema: schema, Table: table}.withDefaults())
	return strings.Join(q.schema, ";\n") + ";\n"
}

// queries are the SQL statements of one outbox table.
type queries struct {
	table   string   // the quoted, qualified table name
	schema  []string // what creates the table
	channel string   // the NOTIFY channel
	lockKey int64    // the advisory lock of the relay
	// migrateKey is the advisory lock that serialises migrations.
	migrateKey int64

	insert, insertNotify string
	fetch                string
	markSent, deleteSent string
	cleanup              string
	countPending         string
}

func newQueries(c Config) *queries {
	t := pgx.Identifier{c.Schema, c.Table}.Sanitize()
	h := fnv.New64a()
	h.Write([]byte("loam.events.outbox:" + c.Schema + "." + c.Table))
	sum := h.Sum64()
	q := &queries{
		table:      t,
		channel:    fmt.Sprintf("loam_outbox_%016x", sum),
		lockKey:    int64(sum),
		migrateKey: int64(sum ^ 0x6d6967726174696f), // "migratio"
	}
	if c.Schema != "public" {
		q.schema = append(q.schema, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{c.Schema}.Sanitize())
	}
	q.schema = append(q.schema,
		`CREATE TABLE IF NOT EXISTS `+t+` (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic      text NOT NULL,
	id         text NOT NULL,
	key        text NOT NULL DEFAULT '',
	header     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(header) = 'object'),
	body       bytea NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	sent_at    timestamptz
)`,
		`CREATE INDEX IF NOT EXISTS `+pgx.Identifier{c.Table + "_pending"}.Sanitize()+` ON `+t+` (seq) WHERE sent_at IS NULL`,
		`COMMENT ON TABLE `+t+` IS 'Loam events outbox: events written in application transactions, relayed to the broker in seq order'`,
	)
	// The events of one Send keep their order: the identity is drawn in the
	// order of the sorted rows.
	q.insert = `INSERT INTO ` + t + ` (topic, id, key, header, body)
	SELECT $1, m.id, m.key, m.header::jsonb, m.body
	FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS m(id, key, header, body, n)
	ORDER BY m.n`
	// A NOTIFY is delivered when the transaction commits, and never if it
	// rolls back; the notifications of one transaction fold into one.
	q.insertNotify = `WITH ins AS (` + q.insert + `) SELECT pg_notify($6, '')`
	q.fetch = `SELECT seq, topic, id, key, header, body, extract(epoch FROM clock_timestamp() - created_at)::float8
	FROM ` + t + ` WHERE sent_at IS NULL ORDER BY seq LIMIT $1`
	q.markSent = `UPDATE ` + t + ` SET sent_at = clock_timestamp() WHERE seq = ANY($1::bigint[])`
	q.deleteSent = `DELETE FROM ` + t + ` WHERE seq = ANY($1::bigint[])`
	q.cleanup = `DELETE FROM ` + t + ` WHERE seq IN (SELECT seq FROM ` + t + `
	WHERE sent_at < clock_timestamp() - make_interval(secs => $1) ORDER BY seq LIMIT $2)`
	q.countPending = `SELECT count(*) FROM (SELECT 1 FROM ` + t + ` WHERE sent_at IS NULL LIMIT $1) p`
	return q
}

// migrate creates the table when it does not exist, under an advisory lock
// so that replicas starting together do not race. A table that exists is
// left alone: creating (even with IF NOT EXISTS) needs privileges that a
// service's role may lack once its table is there.
func (q *queries) migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, q.migrateKey); err != nil {
			return err
		}
		var table, ns bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $2)`,
			q.table, schema).Scan(&table, &ns); err != nil {
			return err
		}
		if table {
			return nil
		}
		stmts := q.schema
		if ns && strings.HasPrefix(stmts[0], "CREATE SCHEMA") {
			stmts = stmts[1:]
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
}
