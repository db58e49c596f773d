// Package redistier is the shared tier of package cache: a rueidis client
// with a circuit breaker, a background probe that brings it back, a replay of
// the writes an outage swallowed, and server-assisted invalidation.
//
// Invalidation uses Redis's client tracking in broadcast mode (CLIENT
// TRACKING ON PREFIX <prefix> BCAST NOLOOP): Redis tells the client about
// every key under the prefix that another connection writes, deletes, or
// that expires or is evicted, and rueidis hands the keys to OnInvalidate.
// NOLOOP leaves out the client's own writes; the tier keeps one connection
// per Redis node so that "own" means this process. When a connection is
// lost, rueidis reports an invalidation of everything: messages may have
// been missed. The tier then lets the process keep its entries while Redis
// is away and calls OnFlush once Redis answers again, before it is used.
//
// The tier does no telemetry: its caller measures and traces each call and
// learns the state changes from OnStateChange.
package redistier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// ErrUnavailable is the error of a call the tier did not make, or that
// failed for want of Redis: the breaker is open, the client is not
// connected, the connection failed or the call timed out. The cause, when
// there is one, is wrapped too.
var ErrUnavailable = errors.New("redis is unavailable")

// ErrMiss is the error of Get for a key Redis does not hold.
var ErrMiss = errors.New("redis has no such key")

// Options configures a Tier. Every field is required unless it says
// otherwise.
type Options struct {
	// Client is how to reach Redis. The tier sets the fields that
	// invalidation and failure handling depend on (tracking, retries, the
	// invalidation callback, one connection per node).
	Client rueidis.ClientOption
	// Prefix starts every key of the tier; invalidations are tracked for
	// it.
	Prefix string
	// Timeout bounds each call.
	Timeout time.Duration
	// FailureThreshold is how many failures in a row open the breaker.
	FailureThreshold int
	// RetryInterval is how often the probe tries Redis while the breaker
	// is open.
	RetryInterval time.Duration
	// MaxPending bounds the keys whose writes are kept for replay. Past it,
	// recovery deletes every key under Prefix instead.
	MaxPending int
	// OnInvalidate is called with each key another connection changed. It
	// runs on the connection's reading goroutine and must be quick.
	OnInvalidate func(key string)
	// OnFlush is called when entries copied from Redis may have missed
	// invalidations: on recovery, and after Redis reported a flush.
	OnFlush func()
	// OnStateChange is called when the tier becomes unavailable (err is
	// the cause) or available again (err is nil). Optional.
	OnStateChange func(err error)
	// Logger receives state changes and replay failures.
	Logger *slog.Logger
}

// Tier is a Redis client with a breaker. It is safe for concurrent use.
type Tier struct {
	o   Options
	opt rueidis.ClientOption

	client    atomic.Pointer[rueidis.Client]
	open      atomic.Bool // the breaker: calls fail fast with ErrUnavailable
	failures  atomic.Int32
	needFlush atomic.Bool
	pendingN  atomic.Int32
	closed    atomic.Bool

	mu       sync.Mutex
	cause    error               // why the tier is unavailable
	pending  map[string]struct{} // keys whose last write may not have reached Redis
	overflow bool                // more than MaxPending: flush the prefix on recovery

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a Tier and starts its probe. When Redis cannot be reached the
// Tier starts unavailable and connects in the background; New fails only on
// errors that retrying cannot cure, such as a refused password or a server
// without RESP3 client tracking.
func New(o Options) (*Tier, error) {
	t := &Tier{
		o:       o,
		pending: map[string]struct{}{},
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	opt := o.Client
	opt.DisableCache = false // tracking needs it; the client's own cache is never used
	opt.ClientTrackingOptions = []string{"PREFIX", o.Prefix, "BCAST", "NOLOOP"}
	opt.OnInvalidations = t.onInvalidations
	opt.DisableRetry = true // the breaker and the callers' fallbacks handle failures
	opt.PipelineMultiplex = -1
	t.opt = opt
	if err := t.connect(); err != nil {
		if permanent(err) {
			return nil, err
		}
		t.markDown(err)
	}
	go t.run()
	return t, nil
}

// permanent reports whether err, from connecting, is one that connecting
// again will not cure: Redis answered, and refused.
func permanent(err error) bool {
	_, isRedisErr := rueidis.IsRedisErr(err)
	return isRedisErr || errors.Is(err, rueidis.ErrNoCache) || errors.Is(err, rueidis.ErrNoAddr)
}

func (t *Tier) connect() error {
	c, err := rueidis.NewClient(t.opt)
	if err != nil {
		if c != nil {
			c.Close()
		}
		return err
	}
	if t.closed.Load() || !t.client.CompareAndSwap(nil, &c) {
		c.Close()
	}
	return nil
}

// onInvalidations receives tracking messages. nil means "everything": the
// connection was lost, or Redis was flushed.
func (t *Tier) onInvalidations(msgs []rueidis.RedisMessage) {
	if t.closed.Load() {
		return
	}
	if msgs == nil {
		t.needFlush.Store(true)
		t.poke()
		return
	}
	for _, m := range msgs {
		if key, err := m.ToString(); err == nil {
			t.o.OnInvalidate(key)
		}
	}
}

func (t *Tier) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// acquire returns the client when the breaker lets a call through.
func (t *Tier) acquire() (rueidis.Client, error) {
	if t.closed.Load() {
		return nil, fmt.Errorf("%w: closed", ErrUnavailable)
	}
	if t.open.Load() {
		return nil, ErrUnavailable
	}
	p := t.client.Load()
	if p == nil {
		return nil, ErrUnavailable
	}
	return *p, nil
}

// result classifies the outcome of a call made with ctx.
func (t *Tier) result(ctx context.Context, err error) error {
	if err == nil || rueidis.IsRedisNil(err) {
		if t.failures.Load() != 0 {
			t.failures.Store(0)
		}
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr // the caller gave up, which says nothing about Redis
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return err // Redis answered
	}
	if n := t.failures.Add(1); int(n) >= t.o.FailureThreshold {
		t.markDown(err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// markDown opens the breaker. The probe tries Redis again at the next
// RetryInterval.
func (t *Tier) markDown(cause error) {
	t.mu.Lock()
	t.cause = cause
	t.mu.Unlock()
	if t.open.CompareAndSwap(false, true) {
		t.o.Logger.Warn("cache: redis unavailable; serving from the process and the loaders", "error", cause)
		if t.o.OnStateChange != nil {
			t.o.OnStateChange(cause)
		}
	}
}

// Get returns the value of key, ErrMiss, ErrUnavailable or ctx's error.
func (t *Tier) Get(ctx context.Context, key string) ([]byte, error) {
	c, err := t.acquire()
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	b, err := c.Do(octx, c.B().Get().Key(key).Build()).AsBytes()
	if err = t.result(ctx, err); rueidis.IsRedisNil(err) {
		return nil, ErrMiss
	}
	return b, err
}

// Set stores value under key for ttl; with onlyIfAbsent, only when key has
// no value.
func (t *Tier) Set(ctx context.Context, key string, value []byte, ttl time.Duration, onlyIfAbsent bool) error {
	c, err := t.acquire()
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	ms := max(ttl.Milliseconds(), 1)
	v := c.B().Set().Key(key).Value(rueidis.BinaryString(value))
	var cmd rueidis.Completed
	if onlyIfAbsent {
		cmd = v.Nx().PxMilliseconds(ms).Build()
	} else {
		cmd = v.PxMilliseconds(ms).Build()
	}
	err = c.Do(octx, cmd).Error()
	if rueidis.IsRedisNil(err) { // NX and the key exists
		err = nil
	}
	return t.result(ctx, err)
}

// Del deletes key.
func (t *Tier) Del(ctx context.Context, key string) error {
	c, err := t.acquire()
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	return t.result(ctx, c.Do(octx, c.B().Del().Key(key).Build()).Error())
}

// Eval runs script on keys and args and returns its string answer, or
// ErrMiss when the script returns nil (false in Lua).
func (t *Tier) Eval(ctx context.Context, script *rueidis.Lua, keys, args []string) (string, error) {
	c, err := t.acquire()
	if err != nil {
		return "", err
	}
	octx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	v, err := script.Exec(octx, c, keys, args).ToString()
	if err = t.result(ctx, err); rueidis.IsRedisNil(err) {
		return "", ErrMiss
	}
	return v, err
}

// Remember keeps key for deletion when Redis is back: a write to it may not
// have reached Redis, so Redis and the other processes may hold an older
// value.
func (t *Tier) Remember(key string) {
	t.keep(key)
	t.poke()
}

// keep adds keys to the replay.
func (t *Tier) keep(keys ...string) {
	t.mu.Lock()
	for _, key := range keys {
		switch {
		case t.overflow:
		case len(t.pending) >= t.o.MaxPending:
			t.overflow = true
			t.pending = map[string]struct{}{}
		default:
			t.pending[key] = struct{}{}
		}
	}
	t.mu.Unlock()
	t.pendingN.Store(1)
}

// Available reports whether calls go through to Redis.
func (t *Tier) Available() bool {
	return !t.closed.Load() && !t.open.Load() && t.client.Load() != nil
}

// Check returns nil when Redis answers a PING within the call timeout,
// else an error wrapping ErrUnavailable and the cause.
func (t *Tier) Check(ctx context.Context) error {
	c, err := t.acquire()
	if err != nil {
		t.mu.Lock()
		cause := t.cause
		t.mu.Unlock()
		if cause != nil {
			return fmt.Errorf("%w: %w", err, cause)
		}
		return err
	}
	octx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	return t.result(ctx, c.Do(octx, c.B().Ping().Build()).Error())
}

// probeTimeout bounds the probe's replay of lost writes, which may take
// many calls.
func (t *Tier) probeTimeout() time.Duration { return max(t.o.Timeout, time.Second) }

// run probes Redis while the tier is unavailable, has writes to replay or
// may have missed invalidations, until Close.
func (t *Tier) run() {
	defer close(t.done)
	tick := time.NewTicker(t.o.RetryInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.kick:
		case <-tick.C:
		}
		if t.open.Load() || t.needFlush.Load() || t.pendingN.Load() != 0 || t.client.Load() == nil {
			t.probe()
		}
	}
}

// probe brings the tier back when Redis answers: it flushes what the
// process copied from Redis if invalidations may have been missed, deletes
// the keys whose writes were lost, and closes the breaker.
func (t *Tier) probe() {
	if t.client.Load() == nil {
		if err := t.connect(); err != nil {
			t.markDown(err)
			return
		}
	}
	p := t.client.Load()
	if p == nil { // closed meanwhile
		return
	}
	c := *p
	// A PING must meet the call timeout: a Redis that answers later than
	// that is as unusable to callers as one that does not answer, and
	// closing the breaker on it would make the next callers wait out the
	// timeout to open it again.
	ctx, cancel := context.WithTimeout(context.Background(), t.o.Timeout)
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		t.markDown(err)
		return
	}
	if t.needFlush.Swap(false) || t.open.Load() {
		t.o.OnFlush()
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*t.probeTimeout())
	defer rcancel()
	if err := t.replay(rctx, c); err != nil {
		t.o.Logger.Warn("cache: replaying writes made while redis was unavailable", "error", err)
		t.markDown(err)
		return
	}
	t.failures.Store(0)
	if t.open.CompareAndSwap(true, false) {
		t.mu.Lock()
		t.cause = nil
		t.mu.Unlock()
		t.o.Logger.Info("cache: redis available again")
		if t.o.OnStateChange != nil {
			t.o.OnStateChange(nil)
		}
	}
}

// replay deletes the keys that Remember kept, or every key under the
// prefix after an overflow. Keys it could not delete are kept.
func (t *Tier) replay(ctx context.Context, c rueidis.Client) error {
	t.mu.Lock()
	keys := make([]string, 0, len(t.pending))
	for k := range t.pending {
		keys = append(keys, k)
	}
	overflow := t.overflow
	t.pending, t.overflow = map[string]struct{}{}, false
	t.pendingN.Store(0)
	t.mu.Unlock()

	var err error
	if overflow {
		t.o.Logger.Warn("cache: more writes were lost than can be replayed one by one; deleting every key of the namespace", "prefix", t.o.Prefix)
		if err = t.flushPrefix(ctx, c); err != nil {
			t.mu.Lock()
			t.overflow = true
			t.mu.Unlock()
			t.pendingN.Store(1)
		}
		return err
	}
	failed := unlink(ctx, c, keys)
	if len(failed) > 0 {
		t.keep(failed...)
		return fmt.Errorf("%d of %d keys could not be deleted", len(failed), len(keys))
	}
	return nil
}

// unlink deletes keys one command each (a cluster refuses keys of several
// slots in one), and returns those it could not delete.
func unlink(ctx context.Context, c rueidis.Client, keys []string) (failed []string) {
	if len(keys) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = c.B().Unlink().Key(k).Build()
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		if r.Error() != nil {
			failed = append(failed, keys[i])
		}
	}
	return failed
}

// flushPrefix deletes every key under the prefix, scanning each node.
func (t *Tier) flushPrefix(ctx context.Context, c rueidis.Client) error {
	for _, node := range c.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(t.o.Prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return err
			}
			if failed := unlink(ctx, c, e.Elements); len(failed) > 0 {
				return fmt.Errorf("%d keys could not be deleted", len(failed))
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// Close stops the probe and closes the client. Calls after Close fail with
// ErrUnavailable. Keys kept for replay are dropped: their entries expire
// in Redis by their TTL.
func (t *Tier) Close() {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		close(t.stop)
		<-t.done
		if p := t.client.Swap(nil); p != nil {
			(*p).Close()
		}
	})
}
