package rabbitmq

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/loamhq/loam/config"
)

// Defaults applied by New to zero fields of Config. A Config loaded with
// config.Load has them already, from the `default` tags.
const (
	DefaultURL            = "amqp://127.0.0.1:5672/"
	DefaultExchange       = "loam.events"
	DefaultPublishWindow  = 256
	DefaultConnectTimeout = 5 * time.Second
	DefaultHeartbeat      = 10 * time.Second
	DefaultReconnectMin   = 200 * time.Millisecond
	DefaultReconnectMax   = 15 * time.Second
)

// Config is the RabbitMQ driver's configuration: the `rabbitmq` part of the
// events section. The zero value connects to DefaultURL as guest.
type Config struct {
	// URL is the broker to connect to: amqp://user@host:5672/vhost, or
	// amqps:// for TLS with the system's roots.
	URL string `koanf:"url" default:"amqp://127.0.0.1:5672/"`
	// Password, when set, replaces the password of URL, so that the URL can
	// sit in a configuration file and the password in a secret
	// ("file:/run/secrets/rabbitmq").
	Password config.Secret `koanf:"password"`
	// Name is the connection's name, as the management UI shows it.
	Name string `koanf:"name"`
	// Exchange is the durable topic exchange that every topic is a routing
	// key of. It is declared when missing.
	Exchange string `koanf:"exchange" default:"loam.events"`
	// PublishWindow is how many publishes may await their publisher confirm
	// at once, across the connection.
	PublishWindow int `koanf:"publish_window" default:"256" validate:"min=0"`
	// Prefetch is the basic.qos prefetch count of every subscription's
	// channel: how many unsettled messages the broker sends ahead. Zero
	// means the subscription's in-flight limit (its concurrency).
	Prefetch int `koanf:"prefetch" validate:"min=0"`
	// DeliveryLimit is the x-delivery-limit of the quorum queues the driver
	// declares. RabbitMQ counts it in redeliveries: a queue with limit L
	// delivers a message at most L+1 times, then drops it. Zero, or
	// anything lower, means MaxAttempts of the subscription, so the broker
	// delivers MaxAttempts+1 times (see driver.SubscriptionConfig): events
	// has every attempt and one more delivery to dead-letter the message,
	// and a message that crashes its consumer every time still stops.
	// Changing it for an existing queue needs the queue deleted, or a
	// policy: RabbitMQ refuses to redeclare a queue with other arguments.
	DeliveryLimit int `koanf:"delivery_limit" validate:"min=0"`
	// DropUnroutable publishes without the mandatory flag, so that an event
	// sent to a topic that no subscription has a queue for is dropped by
	// the broker instead of failing the publish with ErrUnroutable.
	DropUnroutable bool `koanf:"drop_unroutable"`
	// ConnectTimeout bounds each connection attempt, TCP and AMQP handshake
	// together.
	ConnectTimeout time.Duration `koanf:"connect_timeout" default:"5s" validate:"min=0s"`
	// Heartbeat is the AMQP heartbeat interval: a peer silent for about
	// three of them is taken for lost and the connection redialled.
	Heartbeat time.Duration `koanf:"heartbeat" default:"10s" validate:"min=0s"`
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// attempts to redial a lost connection, which go on until Close.
	ReconnectMin time.Duration `koanf:"reconnect_min" default:"200ms" validate:"min=0s"`
	ReconnectMax time.Duration `koanf:"reconnect_max" default:"15s" validate:"min=0s"`
}

// ErrInvalidConfig is wrapped by every error of Validate.
var ErrInvalidConfig = errors.New("rabbitmq: invalid configuration")

// exchangePattern is an exchange name that RabbitMQ accepts and does not
// reserve.
var exchangePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,255}$`)

// Validate reports every problem of c, joined, each naming its full key in
// a service's configuration, such as "events.rabbitmq.url". New calls it.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: events.rabbitmq.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if p, err := url.Parse(c.url()); err != nil || p.Host == "" || (p.Scheme != "amqp" && p.Scheme != "amqps") {
		bad("url", "%q is not an amqp:// or amqps:// URL with a host", redact(c.url()))
	}
	if c.Exchange != "" && (!exchangePattern.MatchString(c.Exchange) || strings.HasPrefix(c.Exchange, "amq.")) {
		bad("exchange", "%q is not an exchange name of letters, digits, '_', '-', '.' and ':' outside amq.*", c.Exchange)
	}
	for key, n := range map[string]int{"publish_window": c.PublishWindow, "prefetch": c.Prefetch, "delivery_limit": c.DeliveryLimit} {
		if n < 0 {
			bad(key, "%d is negative", n)
		}
	}
	if c.Prefetch > 65535 {
		bad("prefetch", "%d is above 65535, AMQP's largest prefetch count", c.Prefetch)
	}
	for key, d := range map[string]time.Duration{
		"connect_timeout": c.ConnectTimeout, "heartbeat": c.Heartbeat,
		"reconnect_min": c.ReconnectMin, "reconnect_max": c.ReconnectMax,
	} {
		if d < 0 {
			bad(key, "%v is negative", d)
		}
	}
	if c.ReconnectMax > 0 && c.ReconnectMax < c.ReconnectMin {
		bad("reconnect_max", "%v is below reconnect_min %v", c.ReconnectMax, c.ReconnectMin)
	}
	return errors.Join(errs...)
}

func (c Config) url() string {
	if c.URL == "" {
		return DefaultURL
	}
	return c.URL
}

// dialURL is the URL to dial: url() with Password in it.
func (c Config) dialURL() string {
	u := c.url()
	if c.Password.IsZero() {
		return u
	}
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	user := "guest"
	if p.User != nil {
		user = p.User.Username()
	}
	p.User = url.UserPassword(user, c.Password.Reveal())
	return p.String()
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.PublishWindow == 0 {
		c.PublishWindow = DefaultPublishWindow
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = max(DefaultReconnectMax, c.ReconnectMin)
	}
	return c
}

// redact hides a password in a broker URL.
func redact(u string) string {
	if i, j := strings.Index(u, "://"), strings.LastIndex(u, "@"); i >= 0 && j > i {
		if k := strings.Index(u[i+3:j], ":"); k >= 0 {
			return u[:i+3+k] + ":[redacted]" + u[j:]
		}
	}
	return u
}
