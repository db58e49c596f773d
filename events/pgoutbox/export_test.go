package pgoutbox

import "github.com/jackc/pgx/v5"

// WithAfterSend runs f on the relay's connection between the send of a
// batch and its marking: tests kill a relay there, at the worst moment.
func WithAfterSend(f func(*pgx.Conn)) Option {
	return optionFunc(func(o *options) { o.afterSend = f })
}
