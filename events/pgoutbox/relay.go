package pgoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/loamhq/loam/events/driver"
)

// countLimit caps the count of pending events, so that counting a large
// backlog stays cheap.
const countLimit = 1_000_000

// countEvery is how often the relay counts a backlog larger than a batch.
const countEvery = 5 * time.Second

// relay sends committed events through the wrapped broker, in seq order,
// and marks them sent. One relay at a time across processes holds the
// table's advisory lock and relays; the others stand by and try to take the
// lock every LockInterval.
//
// It never keeps a cursor: each batch is the first BatchSize rows not yet
// marked sent, by seq. An identity is drawn when a row is inserted, not
// when its transaction commits, so a row can commit after rows with a
// higher seq have been relayed; the next batch still finds it, since it is
// unmarked, where a "seq above the last one relayed" cursor would skip it
// for good.
type relay struct {
	b       *Broker
	cfg     RelayConfig
	connCfg *pgx.ConnConfig

	loop     context.Context // waits and new work; cancelled when Close begins
	stopLoop context.CancelFunc
	work     context.Context // the batch in flight; cancelled when the stop timeout passes
	stopWork context.CancelFunc
	done     chan struct{}

	leader  atomic.Bool
	pending atomic.Int64
	lag     atomic.Int64 // nanoseconds

	afterSend   func(*pgx.Conn) // test hook, between send and mark
	nextCleanup time.Time
	nextCount   time.Time
}

func newRelay(b *Broker, afterSend func(*pgx.Conn)) *relay {
	cc := b.pool.Config().ConnConfig.Copy()
	for k, v := range map[string]string{
		"application_name": "loam-outbox-relay",
		// A mark lost in a crash only sends its events again, with the
		// same IDs; not waiting for it to be flushed leaves the disk to
		// the application's commits.
		"synchronous_commit": "off",
		// The lock lives as long as the session: have the server notice a
		// vanished relay within about half a minute, rather than the hours
		// of the system's TCP defaults, so that another process takes over.
		"tcp_keepalives_idle":     "10",
		"tcp_keepalives_interval": "5",
		"tcp_keepalives_count":    "3",
	} {
		cc.RuntimeParams[k] = v
	}
	r := &relay{b: b, cfg: b.cfg.Relay, connCfg: cc, done: make(chan struct{}), afterSend: afterSend}
	r.loop, r.stopLoop = context.WithCancel(context.Background())
	r.work, r.stopWork = context.WithCancel(context.Background())
	return r
}

// stop asks the relay to stop after the batch in flight, and cancels that
// batch if it takes longer than timeout.
func (r *relay) stop(timeout time.Duration) {
	r.stopLoop()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		r.b.log.Warn("pgoutbox: the relay did not finish its batch in time; its unmarked events will be sent again", "table", r.b.q.table, "stop_timeout", timeout)
		r.stopWork()
		<-r.done
	}
	r.stopWork()
}

// run connects, stands by until it holds the lock, relays, and starts over
// with backoff when its connection fails, until stop.
func (r *relay) run() {
	defer close(r.done)
	wait := r.cfg.InitialBackoff
	for {
		led, err := r.session()
		if r.loop.Err() != nil {
			return
		}
		if led {
			wait = r.cfg.InitialBackoff
		}
		r.failed(stepDatabase, err)
		r.b.log.Warn("pgoutbox: the relay's database connection failed; reconnecting", "table", r.b.q.table, "error", err, "retry_in", wait)
		if !sleep(r.loop, jitter(wait)) {
			return
		}
		wait = min(2*wait, r.cfg.MaxBackoff)
	}
}

// session runs one connection: it reports whether the relay led on it, and
// returns the error that ended it, or nil on stop.
func (r *relay) session() (led bool, err error) {
	ctx, cancel := context.WithTimeout(r.loop, r.cfg.Timeout)
	conn, err := pgx.ConnectConfig(ctx, r.connCfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(ctx) // ends the session, and so releases the lock
	}()
	if err := r.limitIdle(conn); err != nil {
		return false, err
	}
	for {
		ok, err := r.tryLock(conn)
		if err != nil {
			return false, err
		}
		if ok {
			break
		}
		if !sleep(r.loop, r.cfg.LockInterval) {
			return false, nil
		}
	}
	r.leader.Store(true)
	defer func() {
		r.leader.Store(false)
		r.pending.Store(0)
		r.lag.Store(0)
	}()
	r.b.log.Info("pgoutbox: this process relays the outbox", "table", r.b.q.table)
	if !r.b.cfg.DisableNotify {
		ctx, cancel := context.WithTimeout(r.loop, r.cfg.Timeout)
		_, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.b.q.channel}.Sanitize())
		cancel()
		if err != nil {
			return true, err
		}
	}
	return true, r.lead(conn)
}

// limitIdle has the server end the session when it stays idle far longer
// than the relay ever leaves it (a send and a backoff, a poll, a lock
// attempt): a relay whose process is stopped, or whose network path holds
// its connection open without passing data, then loses its lock, which
// TCP keepalives alone would not take from it. Servers before PostgreSQL
// 14, without idle_session_timeout, rely on keepalives.
func (r *relay) limitIdle(conn *pgx.Conn) error {
	idle := 2 * (r.cfg.Timeout + r.cfg.MaxBackoff + r.cfg.PollInterval + r.cfg.LockInterval)
	ctx, cancel := context.WithTimeout(r.loop, r.cfg.Timeout)
	defer cancel()
	_, err := conn.Exec(ctx, fmt.Sprintf("SET idle_session_timeout = %d", idle.Milliseconds()))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: before 14
		return nil
	}
	return err
}

func (r *relay) tryLock(conn *pgx.Conn) (bool, error) {
	ctx, cancel := context.WithTimeout(r.loop, r.cfg.Timeout)
	defer cancel()
	var ok bool
	err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.b.q.lockKey).Scan(&ok)
	return ok, err
}

// lead relays batch after batch until stop or a database error. A failed
// send leaves its events unmarked: the next batch starts with them again,
// after a backoff, so they go out in order once the broker takes them.
func (r *relay) lead(conn *pgx.Conn) error {
	backoff := r.cfg.InitialBackoff
	for r.loop.Err() == nil {
		if err := r.cleanup(conn); err != nil {
			return err
		}
		rows, err := r.fetch(conn)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			r.pending.Store(0)
			r.lag.Store(0)
			if err := r.wait(conn); err != nil {
				return err
			}
			continue
		}
		if err := r.observe(conn, rows); err != nil {
			return err
		}
		sent, sendErr := r.send(rows)
		if len(sent) > 0 {
			if r.afterSend != nil {
				r.afterSend(conn)
			}
			if err := r.mark(conn, sent); err != nil {
				return err
			}
		}
		if sendErr == nil {
			backoff = r.cfg.InitialBackoff
			continue
		}
		if !sleep(r.loop, jitter(backoff)) {
			return nil
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
	return nil
}

// row is one event read from the outbox.
type row struct {
	seq   int64
	topic string
	msg   *driver.Message
	age   time.Duration // at the time of reading
}

func (r *relay) fetch(conn *pgx.Conn) ([]row, error) {
	ctx, cancel := context.WithTimeout(r.work, r.cfg.Timeout)
	defer cancel()
	rs, err := conn.Query(ctx, r.b.q.fetch, r.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	var out []row
	var header []byte
	var age float64
	for rs.Next() {
		var x row
		x.msg = &driver.Message{}
		if err := rs.Scan(&x.seq, &x.topic, &x.msg.ID, &x.msg.Key, &header, &x.msg.Body, &age); err != nil {
			rs.Close()
			return nil, err
		}
		x.msg.Header = decodeHeader(header)
		x.age = time.Duration(age * float64(time.Second))
		out = append(out, x)
	}
	return out, rs.Err()
}

// decodeHeader reads a header object, whose values should be strings; any
// other value, written by hand, is kept as its JSON text rather than
// blocking the outbox.
func decodeHeader(j []byte) map[string]string {
	var raw map[string]json.RawMessage
	if json.Unmarshal(j, &raw) != nil {
		return map[string]string{}
	}
	h := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		h[k] = s
	}
	return h
}

// observe records the backlog: the rows read when they are all there is,
// else a count, at most every countEvery.
func (r *relay) observe(conn *pgx.Conn, rows []row) error {
	r.lag.Store(int64(rows[0].age))
	if len(rows) < r.cfg.BatchSize {
		r.pending.Store(int64(len(rows)))
		return nil
	}
	if time.Now().Before(r.nextCount) {
		return nil
	}
	r.nextCount = time.Now().Add(countEvery)
	ctx, cancel := context.WithTimeout(r.work, r.cfg.Timeout)
	defer cancel()
	var n int64
	if err := conn.QueryRow(ctx, r.b.q.countPending, countLimit).Scan(&n); err != nil {
		return err
	}
	r.pending.Store(n)
	return nil
}

// send sends rows through the wrapped broker, one Send per topic, the
// topics concurrently, each in seq order. It returns the seqs of the rows
// sent, and the errors of the topics that failed.
func (r *relay) send(rows []row) ([]int64, error) {
	start := time.Now()
	var order []string
	groups := map[string][]row{}
	for _, x := range rows {
		if _, ok := groups[x.topic]; !ok {
			order = append(order, x.topic)
		}
		groups[x.topic] = append(groups[x.topic], x)
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, name := range order {
		wg.Go(func() { errs[i] = r.sendTopic(name, groups[name], start) })
	}
	wg.Wait()
	var sent []int64
	for i, name := range order {
		if errs[i] != nil {
			continue
		}
		for _, x := range groups[name] {
			sent = append(sent, x.seq)
		}
	}
	return sent, errors.Join(errs...)
}

// sendTopic sends the rows of one topic in a span linked to the spans that
// published them.
func (r *relay) sendTopic(name string, rows []row, fetched time.Time) error {
	ms := make([]*driver.Message, len(rows))
	for i, x := range rows {
		ms[i] = x.msg
	}
	tel := r.b.tel
	ctx, cancel := context.WithTimeout(r.work, r.cfg.Timeout)
	defer cancel()
	attrs := []attribute.KeyValue{tel.system, semconv.MessagingDestinationName(name)}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...),
		trace.WithAttributes(semconv.MessagingOperationName("relay"), semconv.MessagingOperationTypeSend,
			semconv.MessagingBatchMessageCount(len(ms)), tel.table)}
	if tel.tracing {
		links := make([]trace.Link, 0, len(ms))
		for _, m := range ms {
			sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(m.Header)))
			if sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{semconv.MessagingMessageID(m.ID)}})
			}
		}
		opts = append(opts, trace.WithLinks(links...))
	}
	ctx, span := tel.tracer.Start(ctx, "relay "+name, opts...)
	defer span.End()
	t, err := r.b.innerTopic(ctx, name)
	if err == nil {
		err = t.Send(ctx, ms)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		if r.work.Err() != nil {
			return err // stopping, which stop reports
		}
		r.failed(stepSend, err)
		args := []any{"table", r.b.q.table, "topic", name, "event_id", ms[0].ID, "seq", rows[0].seq, "events", len(ms), "error", err}
		if ctx.Err() == nil && t != nil && !t.IsRetryable(err) {
			r.b.log.Error("pgoutbox: the broker refuses an event; the relay retries it, holding back the events after it, until the broker accepts it or the row is removed", args...)
		} else {
			r.b.log.Warn("pgoutbox: sending through the broker failed; retrying, in order", args...)
		}
		return fmt.Errorf("pgoutbox: relaying %d events to %q: %w", len(ms), name, err)
	}
	set := metric.WithAttributes(attrs...)
	tel.relayed.Add(ctx, int64(len(ms)), set)
	since := time.Since(fetched)
	for _, x := range rows {
		tel.delay.Record(ctx, (x.age + since).Seconds(), set)
	}
	return nil
}

// mark marks the rows sent, or deletes them without retention.
func (r *relay) mark(conn *pgx.Conn, seqs []int64) error {
	ctx, cancel := context.WithTimeout(r.work, r.cfg.Timeout)
	defer cancel()
	sql := r.b.q.deleteSent
	if r.cfg.Retention > 0 {
		sql = r.b.q.markSent
	}
	_, err := conn.Exec(ctx, sql, seqs)
	return err
}

// cleanupBatch bounds each delete of expired rows.
const cleanupBatch = 1000

// cleanup deletes the rows sent more than Retention ago, a bounded number
// of batches at a time, when it is due.
func (r *relay) cleanup(conn *pgx.Conn) error {
	if r.cfg.Retention <= 0 || time.Now().Before(r.nextCleanup) {
		return nil
	}
	r.nextCleanup = time.Now().Add(min(max(r.cfg.Retention/4, 10*time.Millisecond), time.Minute))
	for range 10 {
		ctx, cancel := context.WithTimeout(r.work, r.cfg.Timeout)
		tag, err := conn.Exec(ctx, r.b.q.cleanup, r.cfg.Retention.Seconds(), cleanupBatch)
		cancel()
		if err != nil || tag.RowsAffected() < cleanupBatch {
			return err
		}
	}
	return nil
}

// wait returns when a notification comes, the poll interval passes or the
// relay stops, having drained the notifications already received.
func (r *relay) wait(conn *pgx.Conn) error {
	if r.b.cfg.DisableNotify {
		sleep(r.loop, r.cfg.PollInterval)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.loop, r.cfg.PollInterval)
	defer cancel()
	if _, err := conn.WaitForNotification(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	for {
		if _, err := conn.WaitForNotification(done); err != nil { // only those already received
			return nil
		}
	}
}

func (r *relay) failed(step string, err error) {
	r.b.tel.failed.Add(context.Background(), 1, metric.WithAttributes(r.b.tel.table, attrStep.String(step), errorType(err)))
}

// jitter returns d with its second half random.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
