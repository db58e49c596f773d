// Package eventbus opens an events.Bus from the `events` section of a
// service's configuration, in one call, over the driver that the section
// names:
//
//	bus, err := eventbus.Open(ctx, cfg.Events, events.WithSource("//captures"))
//	defer bus.Close(ctx)
//
// It knows every driver of Loam, explicitly: there is no registry to fill.
// A program that builds its Broker in code (events.NewBus(memory.New()))
// does not need this package, nor link the drivers it does not use.
//
// # Configuration
//
// Config is the `events` section:
//
//	events:
//	  driver: nats            # memory (the default), nats or rabbitmq
//	  source: //captures      # the CloudEvents source of published events
//	  delivery:
//	    max_attempts: 5
//	    initial_backoff: 100ms
//	    max_backoff: 30s
//	    concurrency: 16
//	  nats:
//	    url: nats://nats:4222
//	    streams:
//	      - name: ORDERS
//	        subjects: ["org.example.orders.>"]
//	        max_age: 168h
//	  rabbitmq:               # with driver: rabbitmq
//	    url: amqp://captures@rabbitmq:5672/
//	    password: file:/run/secrets/rabbitmq-password
//	    publish_window: 256
//	  outbox:                 # publish through a PostgreSQL transactional outbox
//	    enabled: true
//	    url: postgres://orders@db:5432/orders
//	    password: file:/run/secrets/db-password
//
// For a local run without a broker, driver memory keeps events in the
// process, and driver nats with nats.embedded.enabled runs a real NATS
// server inside it.
//
// # Outbox
//
// With outbox.enabled, the driver that events.driver names is wrapped in
// the transactional outbox of package pgoutbox: a publish writes its event
// into the outbox table inside the transaction that its context carries
// (pgoutbox.NewContext), and the outbox's relay sends committed events
// through the driver. Subscriptions are the driver's. Open gives the relay
// no telemetry providers, since the events options it takes are the Bus's;
// a service that wants the relay's metrics and spans builds the broker with
// OpenBroker and pgoutbox.WithMeterProvider and WithTracerProvider, and the
// Bus with events.NewBus(broker, cfg.Options()...).
//
// # Errors
//
// Config.Validate names the full key of every problem ("events.driver: ...",
// "events.nats.streams[0].name: ...", "events.rabbitmq.url: ...",
// "events.outbox.url: ..."); Open calls
// it first, then fails with the driver's error, naming its section, when
// the broker or the outbox's database cannot be reached.
package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loamhq/loam/events"
	"github.com/loamhq/loam/events/driver"
	"github.com/loamhq/loam/events/memory"
	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/events/pgoutbox"
	"github.com/loamhq/loam/events/rabbitmq"
)

// Drivers that Config.Driver names.
const (
	DriverMemory   = "memory"
	DriverNATS     = "nats"
	DriverRabbitMQ = "rabbitmq"
)

// Config is the `events` section of a Loam service's configuration. The
// zero value opens an in-memory Bus with the default delivery policy.
type Config struct {
	// Driver is memory (the default), nats or rabbitmq.
	Driver string `koanf:"driver" default:"memory" validate:"omitempty,oneof=memory nats rabbitmq"`
	// Source is the CloudEvents source of the events the service
	// publishes, a URI reference such as "//captures". Empty means "/" and
	// the program's name.
	Source string `koanf:"source"`
	// PublishTimeout bounds how long a publish keeps retrying while the
	// broker is unreachable.
	PublishTimeout time.Duration `koanf:"publish_timeout" default:"30s" validate:"min=0s"`
	// Delivery is the default delivery policy of every subscription; code
	// may override it per subscription.
	Delivery Delivery `koanf:"delivery"`
	// Dedup configures the deduplication of events by ID on the consumer
	// side.
	Dedup Dedup `koanf:"dedup"`
	// NATS configures the nats driver.
	NATS natsjs.Config `koanf:"nats"`
	// RabbitMQ configures the rabbitmq driver.
	RabbitMQ rabbitmq.Config `koanf:"rabbitmq"`
	// Outbox, when enabled, wraps the driver in a PostgreSQL transactional
	// outbox.
	Outbox pgoutbox.Config `koanf:"outbox"`
}

// Delivery is the default delivery policy of subscriptions.
type Delivery struct {
	// MaxAttempts is how many times an event is handled before it is
	// dead-lettered.
	MaxAttempts int `koanf:"max_attempts" default:"5" validate:"min=0"`
	// InitialBackoff and MaxBackoff bound the exponential backoff between
	// attempts.
	InitialBackoff time.Duration `koanf:"initial_backoff" default:"100ms" validate:"min=0s"`
	MaxBackoff     time.Duration `koanf:"max_backoff" default:"30s" validate:"min=0s"`
	// Concurrency is how many events a subscription handles at once.
	Concurrency int `koanf:"concurrency" default:"16" validate:"min=0"`
	// HandlerTimeout bounds each handler call; zero means no bound.
	HandlerTimeout time.Duration `koanf:"handler_timeout" validate:"min=0s"`
}

// Dedup stores that Dedup.Store names.
const (
	DedupMemory = "memory"
	DedupRedis  = "redis"
)

// Dedup configures consumer-side deduplication, which is on by default.
type Dedup struct {
	// Disabled turns deduplication off.
	Disabled bool `koanf:"disabled"`
	// Store is where processed event IDs are remembered: memory (the
	// default) in the process, which deduplicates redeliveries to this
	// replica; or redis, shared by every replica and surviving restarts,
	// on the Redis of the service's cache section (cache.redis). A Loam
	// service (package service) wires redis; with Open, pass
	// events.WithDeduper instead.
	Store string `koanf:"store" default:"memory" validate:"omitempty,oneof=memory redis"`
	// Window is how long a processed event ID is remembered.
	Window time.Duration `koanf:"window" default:"10m" validate:"min=0s"`
	// Size is how many IDs the in-process memory holds.
	Size int `koanf:"size" default:"100000" validate:"min=0"`
}

// Validate reports every problem of c, joined, each naming its full key.
// Zero numbers mean their defaults, as in a Config built in code.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("events.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.Driver {
	case "", DriverMemory:
	case DriverNATS:
		if err := c.NATS.Validate(); err != nil {
			errs = append(errs, err)
		}
	case DriverRabbitMQ:
		if err := c.RabbitMQ.Validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		bad("driver", "%q is not memory, nats or rabbitmq", c.Driver)
	}
	switch c.Dedup.Store {
	case "", DedupMemory, DedupRedis:
	default:
		bad("dedup.store", "%q is not memory or redis", c.Dedup.Store)
	}
	if c.Outbox.Enabled {
		if err := c.Outbox.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	d := c.Delivery
	for key, n := range map[string]int{"delivery.max_attempts": d.MaxAttempts, "delivery.concurrency": d.Concurrency, "dedup.size": c.Dedup.Size} {
		if n < 0 {
			bad(key, "%d is negative", n)
		}
	}
	for key, v := range map[string]time.Duration{
		"publish_timeout": c.PublishTimeout, "delivery.initial_backoff": d.InitialBackoff,
		"delivery.max_backoff": d.MaxBackoff, "delivery.handler_timeout": d.HandlerTimeout, "dedup.window": c.Dedup.Window,
	} {
		if v < 0 {
			bad(key, "%v is negative", v)
		}
	}
	if d.MaxBackoff > 0 && d.MaxBackoff < d.InitialBackoff {
		bad("delivery.max_backoff", "%v is below initial_backoff %v", d.MaxBackoff, d.InitialBackoff)
	}
	return errors.Join(errs...)
}

// Options returns the events options that c sets: the source, the publish
// timeout, the deduplicator and the default delivery policy. Open passes
// them to events.NewBus before the caller's. With dedup.store redis the
// deduplicator is left to the caller, who holds the Redis connection.
func (c Config) Options() []events.Option {
	var opts []events.Option
	if c.Source != "" {
		opts = append(opts, events.WithSource(c.Source))
	}
	if c.PublishTimeout > 0 {
		opts = append(opts, events.WithPublishTimeout(c.PublishTimeout))
	}
	switch {
	case c.Dedup.Disabled:
		opts = append(opts, events.WithDeduper(nil))
	case c.Dedup.Store == DedupRedis:
	default:
		size := c.Dedup.Size
		if size == 0 {
			size = events.DefaultMemoryDedupSize
		}
		opts = append(opts, events.WithDeduper(events.NewMemoryDeduper(size)))
	}
	var policy []events.SubscribeOption
	d := c.Delivery
	if d.MaxAttempts > 0 {
		policy = append(policy, events.WithMaxAttempts(d.MaxAttempts))
	}
	if d.InitialBackoff > 0 || d.MaxBackoff > 0 {
		initial, maxB := d.InitialBackoff, d.MaxBackoff
		if initial == 0 {
			initial = events.DefaultInitialBackoff
		}
		if maxB == 0 {
			maxB = max(events.DefaultMaxBackoff, initial)
		}
		policy = append(policy, events.WithBackoff(initial, maxB))
	}
	if d.Concurrency > 0 {
		policy = append(policy, events.WithConcurrency(d.Concurrency))
	}
	if d.HandlerTimeout > 0 {
		policy = append(policy, events.WithHandlerTimeout(d.HandlerTimeout))
	}
	if c.Dedup.Window > 0 {
		policy = append(policy, events.WithDedupWindow(c.Dedup.Window))
	}
	return append(opts, events.WithDefaults(policy...))
}

// Open validates cfg, connects the driver it names (wrapped in the outbox
// when cfg.Outbox.Enabled) and returns a Bus over it, configured by cfg and
// then by opts. The Bus owns the driver: its Close closes the connection
// (and an embedded server, and the outbox's relay and pool).
//
// Open refuses dedup.store redis: the Redis connection belongs to the
// service's cache, and package service wires it. Outside a service, set
// dedup.store to memory and pass events.WithDeduper.
func Open(ctx context.Context, cfg Config, opts ...events.Option) (*events.Bus, error) {
	if cfg.Dedup.Store == DedupRedis && !cfg.Dedup.Disabled {
		return nil, errors.New("eventbus: events.dedup.store: redis is wired by service.New from the cache section; with eventbus.Open, use memory and pass events.WithDeduper")
	}
	b, err := OpenBroker(ctx, cfg)
	if err != nil {
		return nil, err
	}
	bus, err := events.NewBus(b, append(cfg.Options(), opts...)...)
	if err != nil {
		b.Close()
		return nil, err
	}
	return bus, nil
}

// OpenBroker validates cfg and connects the driver it names, wrapped in the
// outbox, given outboxOpts, when cfg.Outbox.Enabled. The caller owns the
// Broker: events.NewBus takes it over.
func OpenBroker(ctx context.Context, cfg Config, outboxOpts ...pgoutbox.Option) (driver.Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b driver.Broker
	switch cfg.Driver {
	case "", DriverMemory:
		b = memory.New()
	case DriverNATS:
		nb, err := natsjs.New(ctx, cfg.NATS)
		if err != nil {
			return nil, fmt.Errorf("eventbus: events.nats: %w", err)
		}
		b = nb
	case DriverRabbitMQ:
		rb, err := rabbitmq.New(ctx, cfg.RabbitMQ)
		if err != nil {
			return nil, fmt.Errorf("eventbus: events.rabbitmq: %w", err)
		}
		b = rb
	}
	if !cfg.Outbox.Enabled {
		return b, nil
	}
	ob, err := pgoutbox.New(ctx, b, cfg.Outbox, outboxOpts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("eventbus: events.outbox: %w", err)
	}
	return ob, nil
}
