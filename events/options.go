package events

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Defaults of the delivery policy, which WithDefaults and the options of
// Subscribe change.
const (
	DefaultMaxAttempts    = 5
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultConcurrency    = 16
	DefaultDedupWindow    = 10 * time.Minute
	DefaultPublishTimeout = 30 * time.Second
)

// Option configures NewBus.
type Option interface{ applyBus(*busOptions) }

type busOptionFunc func(*busOptions)

func (f busOptionFunc) applyBus(o *busOptions) { f(o) }

type busOptions struct {
	source         string
	tracers        trace.TracerProvider
	meters         metric.MeterProvider
	propagator     propagation.TextMapPropagator
	logger         *slog.Logger
	deduper        Deduper
	publishTimeout time.Duration
	defaults       []SubscribeOption
}

func newBusOptions(opts []Option) busOptions {
	o := busOptions{
		source:         "/" + filepath.Base(os.Args[0]),
		tracers:        tracenoop.NewTracerProvider(),
		meters:         metricnoop.NewMeterProvider(),
		propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		logger:         slog.Default(),
		publishTimeout: DefaultPublishTimeout,
	}
	dedup := true
	for _, opt := range opts {
		if d, ok := opt.(dedupOption); ok {
			dedup = d.d != nil
		}
		opt.applyBus(&o)
	}
	if dedup && o.deduper == nil {
		o.deduper = NewMemoryDeduper(DefaultMemoryDedupSize)
	}
	return o
}

// WithSource sets the CloudEvents source of every event the Bus publishes: a
// URI reference that names the producer, such as "//captures" or
// "/services/captures". The default is "/" followed by the program's name.
func WithSource(source string) Option {
	return busOptionFunc(func(o *busOptions) { o.source = source })
}

// WithTracerProvider sets where publish and process spans go. The default
// records nothing; pass otel.GetTracerProvider() to use the global one.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return busOptionFunc(func(o *busOptions) {
		if tp != nil {
			o.tracers = tp
		}
	})
}

// WithMeterProvider sets where the Bus's metrics go. The default records
// nothing; pass otel.GetMeterProvider() to use the global one.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return busOptionFunc(func(o *busOptions) {
		if mp != nil {
			o.meters = mp
		}
	})
}

// WithPropagator sets how trace context travels in event headers. The
// default is W3C trace context and baggage (traceparent, tracestate,
// baggage), whatever the global propagator is, so that a consumer continues
// the producer's trace even in a process that records nothing itself.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return busOptionFunc(func(o *busOptions) {
		if p != nil {
			o.propagator = p
		}
	})
}

// WithLogger sets the logger of dead letters, handler panics and receive
// errors. The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return busOptionFunc(func(o *busOptions) {
		if l != nil {
			o.logger = l
		}
	})
}

type dedupOption struct{ d Deduper }

func (d dedupOption) applyBus(o *busOptions) { o.deduper = d.d }

// WithDeduper sets what remembers the event IDs that subscriptions have
// processed, so an event delivered twice is handled once. The default is a
// Deduper in process memory (NewMemoryDeduper), which forgets on restart
// and is not shared between replicas; a shared store, such as Redis, makes
// deduplication hold across both. nil turns deduplication off.
func WithDeduper(d Deduper) Option { return dedupOption{d} }

// WithPublishTimeout bounds how long Publish keeps retrying transient
// errors, such as a broker connection being re-established, when ctx has no
// earlier deadline. The default is DefaultPublishTimeout.
func WithPublishTimeout(d time.Duration) Option {
	return busOptionFunc(func(o *busOptions) {
		if d > 0 {
			o.publishTimeout = d
		}
	})
}

// WithDefaults sets the delivery policy of every subscription of the Bus;
// the options given to Subscribe apply after them.
func WithDefaults(opts ...SubscribeOption) Option {
	return busOptionFunc(func(o *busOptions) { o.defaults = append(o.defaults, opts...) })
}

// TopicOption configures NewTopic.
type TopicOption interface{ applyTopic(*topicOptions) }

type topicOptionFunc func(*topicOptions)

func (f topicOptionFunc) applyTopic(o *topicOptions) { f(o) }

type topicOptions struct {
	name string
	json bool
}

// WithTopicName sets the topic's name. The default is the event's
// CloudEvents type, such as "org.example.orders.v1.order_placed".
func WithTopicName(name string) TopicOption {
	return topicOptionFunc(func(o *topicOptions) { o.name = name })
}

// WithJSON publishes the event data as protobuf JSON (content-type
// application/json) instead of binary protobuf (application/protobuf).
// Subscribers read either, whatever the option.
func WithJSON() TopicOption {
	return topicOptionFunc(func(o *topicOptions) { o.json = true })
}

// PublishOption sets attributes of one published event.
type PublishOption interface{ applyPublish(*publishOptions) }

type publishOptionFunc func(*publishOptions)

func (f publishOptionFunc) applyPublish(o *publishOptions) { f(o) }

type publishOptions struct {
	id, subject string
	time        time.Time
	extensions  map[string]string
}

// WithID sets the event's ID instead of a new UUIDv7. Publishing twice with
// one ID is how a producer retries safely: brokers that deduplicate drop
// the second copy, and subscribers deduplicate by ID.
func WithID(id string) PublishOption {
	return publishOptionFunc(func(o *publishOptions) { o.id = id })
}

// WithSubject sets the CloudEvents subject: what the event is about within
// its source, such as the ID of the order.
func WithSubject(subject string) PublishOption {
	return publishOptionFunc(func(o *publishOptions) { o.subject = subject })
}

// WithTime sets the CloudEvents time instead of the time of the Publish
// call.
func WithTime(t time.Time) PublishOption {
	return publishOptionFunc(func(o *publishOptions) { o.time = t })
}

// WithExtension sets a CloudEvents extension attribute, sent as the header
// ce-<name>. Names are 1 to 20 lower-case letters and digits, and may not
// be a CloudEvents or Loam attribute; Publish fails with ErrInvalid
// otherwise.
func WithExtension(name, value string) PublishOption {
	return publishOptionFunc(func(o *publishOptions) {
		if o.extensions == nil {
			o.extensions = map[string]string{}
		}
		o.extensions[name] = value
	})
}

// SubscribeOption sets the delivery policy of a subscription.
type SubscribeOption interface{ applySubscribe(*policy) }

type subscribeOptionFunc func(*policy)

func (f subscribeOptionFunc) applySubscribe(p *policy) { f(p) }

// policy is the delivery policy of one subscription.
type policy struct {
	maxAttempts    int
	initialBackoff time.Duration
	maxBackoff     time.Duration
	concurrency    int
	handlerTimeout time.Duration
	deadLetter     string // topic; "" means <topic>.dlq
	noDeadLetter   bool
	unordered      bool
	dedupWindow    time.Duration
}

func defaultPolicy() policy {
	return policy{
		maxAttempts:    DefaultMaxAttempts,
		initialBackoff: DefaultInitialBackoff,
		maxBackoff:     DefaultMaxBackoff,
		concurrency:    DefaultConcurrency,
		dedupWindow:    DefaultDedupWindow,
	}
}

func (p policy) validate() error {
	switch {
	case p.maxAttempts < 1:
		return fmt.Errorf("%w: max attempts %d is below 1", ErrInvalid, p.maxAttempts)
	case p.concurrency < 1:
		return fmt.Errorf("%w: concurrency %d is below 1", ErrInvalid, p.concurrency)
	case p.initialBackoff < 0 || p.maxBackoff < p.initialBackoff:
		return fmt.Errorf("%w: backoff from %v to %v is not a range", ErrInvalid, p.initialBackoff, p.maxBackoff)
	case p.handlerTimeout < 0:
		return fmt.Errorf("%w: handler timeout %v is negative", ErrInvalid, p.handlerTimeout)
	case p.dedupWindow < 0:
		return fmt.Errorf("%w: deduplication window %v is negative", ErrInvalid, p.dedupWindow)
	}
	return nil
}

// WithMaxAttempts sets how many times a handler is called for one event
// before the event is dead-lettered. 1 means no retry. The default is
// DefaultMaxAttempts.
func WithMaxAttempts(n int) SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.maxAttempts = n })
}

// WithBackoff sets the delay before the first retry and the cap on later
// ones; each retry waits twice as long as the one before, with jitter. The
// defaults are DefaultInitialBackoff and DefaultMaxBackoff.
func WithBackoff(initial, max time.Duration) SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.initialBackoff, p.maxBackoff = initial, max })
}

// WithConcurrency sets how many events the subscription handles at once,
// and so how many it holds unacknowledged. The default is
// DefaultConcurrency.
func WithConcurrency(n int) SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.concurrency = n })
}

// WithHandlerTimeout bounds each handler call: its context is cancelled
// after d, and the call counts as a failed attempt. Zero, the default,
// means no bound besides the subscription's shutdown.
func WithHandlerTimeout(d time.Duration) SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.handlerTimeout = d })
}

// WithDeadLetterTopic sets the topic that receives the events the
// subscription gives up on. The default is the topic's name followed by
// ".dlq". An empty name turns dead-lettering off: such events are then
// dropped, after a log record and the loam.events.dead_letters counter.
func WithDeadLetterTopic(name string) SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.deadLetter, p.noDeadLetter = name, name == "" })
}

// WithUnordered handles events of one key concurrently, for an event type
// that declares a key_field but whose subscriber does not need them in
// order. See the package documentation on ordering.
func WithUnordered() SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.unordered = true })
}

// WithDedupWindow sets how long the subscription remembers a processed
// event ID. Zero turns deduplication off for the subscription. The default
// is DefaultDedupWindow.
func WithDedupWindow(d time.Duration) SubscribeOption {
	return subscribeOptionFunc(func(p *policy) { p.dedupWindow = d })
}
