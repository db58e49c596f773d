// Package pgoutbox is the PostgreSQL transactional outbox of package
// events, on pgx v5: a driver.Broker that wraps another, writes the events
// published to it into an outbox table inside the application's own
// transaction, and relays the committed ones through the wrapped broker,
// in order per key.
package pgoutbox
