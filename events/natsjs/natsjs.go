// Package natsjs is the NATS JetStream driver of package events, on the
// jetstream API of nats.go.
//
//	broker, err := natsjs.New(ctx, natsjs.Config{URL: "nats://nats:4222"})
//	bus, err := events.NewBus(broker)
//
// # Mapping
//
// A topic is a subject: the topic's name, after Config.SubjectPrefix. It
// is stored in a stream: one of Config.Streams whose subjects cover it,
// any stream on the server that covers it, or, with AutoCreateStreams (the
// default), a stream the driver creates for that one subject, named after
// it ("org_example_orders_v1_order_placed"). Streams keep messages for
// their MaxAge (7 days by default), whoever has consumed them, and drop a
// message whose ID (the Nats-Msg-Id header, set to the event ID) they saw
// within their duplicate window (2 minutes by default).
//
// A subscription is a durable pull consumer named after the subscription
// and the topic ("billing__org_example_orders_v1_order_placed"), filtered
// on the topic's subject, delivering new messages from its creation on,
// with explicit acknowledgement and MaxDeliver set to MaxAttempts+1 (see
// driver.SubscriptionConfig). Opening it again resumes it; subscribers of
// one name share its messages. Ack, Nack (a Nak with delay) and Term are
// JetStream's; the driver keeps the acknowledgement deadline (AckWait) of
// messages that events is handling extended, so a long handler does not
// get its message delivered twice.
//
// # Publishing
//
// Send publishes asynchronously and waits for every acknowledgement, with
// at most Config.PublishWindow publishes awaiting one across the
// connection: concurrent Publish calls and PublishBatch pipeline. A lost
// connection fails the publishes in flight with a retryable error, and
// events publishes them again with the same IDs, which the stream
// deduplicates.
//
// # Reconnection
//
// nats.go reconnects by itself, forever, every ReconnectWait; publishes
// made meanwhile are buffered, and consumers resume when the connection is
// back. New fails when the first connection cannot be made, so a service
// does not start without its broker.
//
// # Embedded server
//
// With Config.Embedded.Enabled, New starts a NATS server with JetStream in
// the process, on loopback, and connects to it: local runs get the real
// broker's behaviour without running one. Close shuts it down.
//
// # Configuration
//
// Config is the `nats` part of the events section (eventbus.Config.NATS):
// the server and its credentials, the streams to provision, the defaults of
// streams created on demand, AckWait and MaxAckPending with overrides per
// subscription name, the publish window and timeout, and the embedded
// server. Its Validate names the full key of every problem, such as
// "events.nats.streams[0].subjects".
//
// # Errors and Close
//
// New's errors name the setting or stream at fault. A Broker and what it
// opens are safe for concurrent use; Close closes the connection (and the
// embedded server), after which everything returns driver.ErrClosed.
package natsjs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/loamhq/loam/events/driver"
)

// Option configures New with what a configuration file cannot hold.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	logger *slog.Logger
}

// WithLogger sets the logger of connection events and consumer errors. The
// default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// Broker is a connection to NATS JetStream. Create it with New.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	window chan struct{} // one token per publish awaiting its acknowledgement
	server *embedded     // nil without Embedded

	mu      sync.Mutex
	streams map[string]string // subject -> stream
	closed  bool
}

// New validates cfg, starts the embedded server when configured, connects,
// and creates or updates the streams of cfg.Streams. It fails with an error
// wrapping ErrInvalidConfig for a bad cfg, and with the connection's or
// the server's error otherwise.
func New(ctx context.Context, cfg Config, opts ...Option) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	b := &Broker{cfg: cfg, log: o.logger, window: make(chan struct{}, cfg.PublishWindow), streams: map[string]string{}}
	url := cfg.url()
	if cfg.Embedded.Enabled {
		srv, err := startEmbedded(cfg.Embedded)
		if err != nil {
			return nil, err
		}
		b.server, url = srv, srv.clientURL()
	}
	nopts, err := b.connectOptions()
	if err != nil {
		b.server.shutdown()
		return nil, err
	}
	b.nc, err = nats.Connect(url, nopts...)
	if err != nil {
		b.server.shutdown()
		return nil, fmt.Errorf("natsjs: connecting to %s: %w", redact(url), err)
	}
	b.js, err = jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(2*cfg.PublishWindow),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	for i, sc := range cfg.Streams {
		if _, err := b.js.CreateOrUpdateStream(ctx, b.streamConfig(sc)); err != nil {
			b.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("natsjs: events.nats.streams[%d] (%s): %w", i, sc.Name, err)
		}
	}
	return b, nil
}

func (b *Broker) connectOptions() ([]nats.Option, error) {
	c := b.cfg
	opts := []nats.Option{
		nats.Timeout(c.ConnectTimeout),
		nats.ReconnectWait(c.ReconnectWait),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil when the Broker closes
				b.log.Warn("natsjs: disconnected; reconnecting", "error", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.log.Warn("natsjs: asynchronous error", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("natsjs: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	if c.Embedded.Enabled {
		return opts, nil
	}
	switch {
	case c.User != "" || !c.Password.IsZero():
		opts = append(opts, nats.UserInfo(c.User, c.Password.Reveal()))
	case !c.Token.IsZero():
		opts = append(opts, nats.Token(c.Token.Reveal()))
	case c.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredentialsFile))
	}
	if c.TLSCAFile != "" || c.TLSCertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("natsjs: events.nats.tls_ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("natsjs: events.nats.tls_ca_file: no certificate in %s", c.TLSCAFile)
			}
		}
		if c.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("natsjs: events.nats.tls_cert_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// Conn returns the Broker's NATS connection, for what the driver does not
// cover. Closing it breaks the Broker.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// Capabilities reports System "nats", Durable and OrderedPerKey: a
// consumer delivers a subject's messages in the order they were stored.
func (b *Broker) Capabilities() driver.Capabilities {
	return driver.Capabilities{System: "nats", Durable: true, OrderedPerKey: true}
}

// Close closes the connection, and then the embedded server.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	if b.nc != nil {
		b.nc.Close()
	}
	return b.server.shutdown()
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// subject returns the subject of topic.
func (b *Broker) subject(topic string) string {
	if b.cfg.SubjectPrefix == "" {
		return topic
	}
	return b.cfg.SubjectPrefix + "." + topic
}

// stream returns the name of the stream that stores subject, creating one
// when none does and AutoCreateStreams allows it.
func (b *Broker) stream(ctx context.Context, subject string) (string, error) {
	b.mu.Lock()
	name, ok := b.streams[subject]
	closed := b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return "", driver.ErrClosed
	case ok:
		return name, nil
	}
	name, err := b.js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if auto := b.cfg.AutoCreateStreams; auto != nil && !*auto {
			return "", fmt.Errorf("natsjs: no stream stores subject %q, and events.nats.auto_create_streams is false: add one to events.nats.streams", subject)
		}
		sc := b.cfg.StreamDefaults.stream(strings.NewReplacer(".", "_").Replace(subject), []string{subject})
		_, err = b.js.CreateStream(ctx, b.streamConfig(sc))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile by another process
			err = nil
		}
		name = sc.Name
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("natsjs: finding the stream of %q: %w", subject, err)
	}
	b.mu.Lock()
	b.streams[subject] = name
	b.mu.Unlock()
	return name, nil
}

func (b *Broker) streamConfig(sc StreamConfig) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:       sc.Name,
		Subjects:   sc.Subjects,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     sc.MaxAge,
		MaxBytes:   -1,
		MaxMsgs:    -1,
		Storage:    jetstream.FileStorage,
		Replicas:   max(sc.Replicas, 1),
		Duplicates: sc.DuplicateWindow,
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultStreamMaxAge
	}
	if sc.MaxBytes > 0 {
		c.MaxBytes = sc.MaxBytes
	}
	if sc.Storage == "memory" {
		c.Storage = jetstream.MemoryStorage
	}
	if c.Duplicates == 0 {
		c.Duplicates = min(DefaultDuplicateWindow, c.MaxAge) // JetStream refuses a window past the max age
	}
	return c
}

// OpenTopic finds or creates the stream of the topic's subject.
func (b *Broker) OpenTopic(ctx context.Context, name string) (driver.Topic, error) {
	subject := b.subject(name)
	if _, err := b.stream(ctx, subject); err != nil {
		return nil, err
	}
	return &topic{b: b, subject: subject}, nil
}

// IsRetryable reports whether err is transient: a lost or re-establishing
// connection, a timeout, or JetStream being briefly unavailable.
func IsRetryable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs), errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.Code == 408
	}
	return false
}

type topic struct {
	b       *Broker
	subject string

	mu     sync.Mutex
	closed bool
}

// Send publishes ms asynchronously within the Broker's window and waits for
// every acknowledgement. A goroutine takes the acknowledgements in order,
// returning each window token as its publish completes, so a batch larger
// than the window flows through it.
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
	b := t.b
	futures := make(chan jetstream.PubAckFuture, len(ms))
	acked := make(chan error, 1)
	go func() {
		var first error
		for f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if first == nil {
					first = err
				}
			}
			<-b.window
		}
		acked <- first
	}()
	var err error
	for _, m := range ms {
		select {
		case b.window <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
		msg := &nats.Msg{Subject: t.subject, Data: m.Body, Header: make(nats.Header, len(m.Header)+1)}
		values := make([]string, 0, len(m.Header)+1) // one allocation for every header's value
		for k, v := range m.Header {
			values = append(values, v)
			msg.Header[k] = values[len(values)-1 : len(values) : len(values)]
		}
		if m.ID != "" {
			values = append(values, m.ID)
			msg.Header[jetstream.MsgIDHeader] = values[len(values)-1 : len(values) : len(values)]
		}
		var f jetstream.PubAckFuture
		if f, err = b.js.PublishMsgAsync(msg); err != nil {
			<-b.window
			break
		}
		futures <- f
	}
	close(futures)
	if err == nil {
		select {
		case err = <-acked:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case b.isClosed():
		return driver.ErrClosed
	}
	return fmt.Errorf("natsjs: publishing to %s: %w", t.subject, err)
}

func (t *topic) IsRetryable(err error) bool { return IsRetryable(err) }

func (t *topic) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return nil
}

// redact hides a password in a server URL.
func redact(u string) string {
	if i, j := strings.Index(u, "://"), strings.LastIndex(u, "@"); i >= 0 && j > i {
		return u[:i+3] + "[redacted]" + u[j:]
	}
	return u
}

// ackWaitOf returns the AckWait and MaxAckPending of subscription name.
func (b *Broker) consumerSettings(name string) (time.Duration, int) {
	ackWait, pending := b.cfg.AckWait, b.cfg.MaxAckPending
	if cc, ok := b.cfg.Consumers[name]; ok {
		if cc.AckWait > 0 {
			ackWait = cc.AckWait
		}
		if cc.MaxAckPending > 0 {
			pending = cc.MaxAckPending
		}
	}
	return ackWait, pending
}
