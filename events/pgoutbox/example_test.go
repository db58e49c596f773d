package pgoutbox_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/events/pgoutbox"
	testingv1 "github.com/loamhq/loam/proto/loam/testing/v1"
)

// A service writes an order and its OrderPlaced event in one transaction:
// both are committed, or neither is, and the relay sends the event to NATS
// once the transaction commits. (This example needs PostgreSQL and NATS,
// so it is compiled but not run.)
func Example() {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, "postgres://orders@db:5432/orders")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	nats, err := natsjs.New(ctx, natsjs.Config{URL: "nats://nats:4222"})
	if err != nil {
		log.Fatal(err)
	}
	// The outbox shares the application's pool; the Bus owns the outbox,
	// which owns the NATS broker.
	outbox, err := pgoutbox.New(ctx, nats, pgoutbox.Config{}, pgoutbox.WithPool(db))
	if err != nil {
		nats.Close()
		log.Fatal(err)
	}
	bus, err := events.NewBus(outbox, events.WithSource("//orders"))
	if err != nil {
		outbox.Close()
		log.Fatal(err)
	}
	defer bus.Close(ctx)
	placed, err := events.NewTopic[*testingv1.OrderPlaced](ctx, bus)
	if err != nil {
		log.Fatal(err)
	}

	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, amount_cents) VALUES ($1, $2)", "o-1", 1250); err != nil {
			return err
		}
		return placed.Publish(pgoutbox.NewContext(ctx, tx), &testingv1.OrderPlaced{OrderId: "o-1", AmountCents: 1250})
	})
	if err != nil {
		log.Fatal(err) // neither the order nor the event was committed
	}
}

// The table for a service that runs its own migrations
// (Config.SkipMigration): New runs the same statements otherwise.
func ExampleSchemaSQL() {
	fmt.Print(pgoutbox.SchemaSQL("orders", "outbox"))
	// Output:
	// CREATE SCHEMA IF NOT EXISTS "orders";
	// CREATE TABLE IF NOT EXISTS "orders"."outbox" (
	// 	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	// 	topic      text NOT NULL,
	// 	id         text NOT NULL,
	// 	key        text NOT NULL DEFAULT '',
	// 	header     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(header) = 'object'),
	// 	body       bytea NOT NULL DEFAULT '',
	// 	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	// 	sent_at    timestamptz
	// );
	// CREATE INDEX IF NOT EXISTS "outbox_pending" ON "orders"."outbox" (seq) WHERE sent_at IS NULL;
	// COMMENT ON TABLE "orders"."outbox" IS 'Loam events outbox: events written in application transactions, relayed to the broker in seq order';
}

// Validate names the full key of every problem, and never prints a
// password.
func ExampleConfig_Validate() {
	cfg := pgoutbox.Config{
		Enabled: true,
		URL:     "postgres://orders:hunter2@db:5432/orders",
		Table:   "Outbox",
		Relay:   pgoutbox.RelayConfig{Retention: -1},
	}
	fmt.Println(cfg.Validate())
	// Output:
	// pgoutbox: invalid configuration: events.outbox.url: holds a password; set it in events.outbox.password, a secret, so that it never prints
	// pgoutbox: invalid configuration: events.outbox.table: "Outbox" is not a name of at most 55 lower-case letters, digits and '_'
	// pgoutbox: invalid configuration: events.outbox.relay.retention: -1ns is negative
}
