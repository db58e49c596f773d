package natsjs

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
	DefaultURL             = "nats://127.0.0.1:4222"
	DefaultConnectTimeout  = 5 * time.Second
	DefaultReconnectWait   = time.Second
	DefaultPublishWindow   = 256
	DefaultPublishTimeout  = 10 * time.Second
	DefaultAckWait         = 30 * time.Second
	DefaultMaxAckPending   = 1000
	DefaultStreamMaxAge    = 7 * 24 * time.Hour
	DefaultDuplicateWindow = 2 * time.Minute
)

// Config is the NATS JetStream driver's configuration: the `nats` part of
// the events section. The zero value connects to DefaultURL and creates a
// stream for every topic that no configured stream covers.
type Config struct {
	// URL is the server to connect to, or several separated by commas:
	// nats://host:4222 or tls://host:4222. Ignored with Embedded.
	URL string `koanf:"url" default:"nats://127.0.0.1:4222"`
	// Name is the connection's name, as the server's monitoring shows it.
	Name string `koanf:"name"`
	// User and Password, Token, or CredentialsFile (a .creds file holding
	// a user JWT and NKey seed) authenticate the connection; at most one
	// of the three.
	User            string        `koanf:"user"`
	Password        config.Secret `koanf:"password"`
	Token           config.Secret `koanf:"token"`
	CredentialsFile string        `koanf:"credentials_file"`
	// TLSCAFile, TLSCertFile and TLSKeyFile configure TLS: the CA that signs
	// the server's certificate, and the client's own certificate and key for
	// mutual TLS.
	TLSCAFile   string `koanf:"tls_ca_file"`
	TLSCertFile string `koanf:"tls_cert_file"`
	TLSKeyFile  string `koanf:"tls_key_file"`
	// ConnectTimeout bounds the first connection and each reconnection
	// attempt.
	ConnectTimeout time.Duration `koanf:"connect_timeout" default:"5s" validate:"min=0s"`
	// ReconnectWait is the pause between reconnection attempts, which go on
	// forever: a service keeps trying while the broker is away.
	ReconnectWait time.Duration `koanf:"reconnect_wait" default:"1s" validate:"min=0s"`
	// SubjectPrefix, when set, is prepended to every topic name to make its
	// subject: prefix "prod" puts topic "org.example.orders" on subject
	// "prod.org.example.orders".
	SubjectPrefix string `koanf:"subject_prefix"`
	// PublishWindow is how many publishes may await the server's
	// acknowledgement at once, across the connection: the bounded window
	// of asynchronous publishing.
	PublishWindow int `koanf:"publish_window" default:"256" validate:"min=0"`
	// PublishTimeout bounds the wait for one publish's acknowledgement;
	// events retries a publish that times out.
	PublishTimeout time.Duration `koanf:"publish_timeout" default:"10s" validate:"min=0s"`
	// Streams are created, or updated to match, when the driver starts.
	Streams []StreamConfig `koanf:"streams" validate:"dive"`
	// AutoCreateStreams creates a stream for a topic whose subject no
	// stream covers, named after the subject and configured by
	// StreamDefaults. Nil means true; set false to require every stream in
	// Streams (or made by an operator), so that a misspelt topic fails
	// instead of creating a stream.
	AutoCreateStreams *bool `koanf:"auto_create_streams"`
	// StreamDefaults configures the streams that AutoCreateStreams creates.
	StreamDefaults StreamDefaults `koanf:"stream_defaults"`
	// AckWait is how long the server waits for a delivered message to be
	// settled before delivering it again. The driver extends it for the
	// messages events is handling, so it bounds how long a crashed
	// subscriber's messages stay away, not how long a handler may run.
	AckWait time.Duration `koanf:"ack_wait" default:"30s" validate:"min=0s"`
	// MaxAckPending is how many messages one durable consumer (all the
	// subscribers of one subscription name together) may hold unsettled.
	MaxAckPending int `koanf:"max_ack_pending" default:"1000" validate:"min=0"`
	// Consumers overrides AckWait and MaxAckPending for the subscriptions
	// named here.
	Consumers map[string]ConsumerConfig `koanf:"consumers" validate:"dive"`
	// Embedded runs a NATS server with JetStream inside the process, for
	// local runs and tests without a broker. URL and the credentials are
	// then ignored.
	Embedded EmbeddedConfig `koanf:"embedded"`
}

// StreamConfig is one JetStream stream. (Its multi-word settings carry no
// `validate` tags: inside a list, config would name them by their Go
// names. Validate checks them, under their keys.)
type StreamConfig struct {
	// Name is the stream's name: letters, digits, '-' and '_'.
	Name string `koanf:"name"`
	// Subjects are the subjects the stream stores, wildcards allowed, such
	// as "org.example.orders.>".
	Subjects []string `koanf:"subjects"`
	// MaxAge is how long messages are kept; 7 days when zero.
	MaxAge time.Duration `koanf:"max_age"`
	// MaxBytes caps the stream's size, dropping the oldest messages; zero
	// means no cap.
	MaxBytes int64 `koanf:"max_bytes"`
	// Storage is file (the default) or memory.
	Storage string `koanf:"storage" validate:"omitempty,oneof=file memory"`
	// Replicas is the number of copies in a cluster, 1 (the default) to 5.
	Replicas int `koanf:"replicas" validate:"min=0,max=5"`
	// DuplicateWindow is how long the stream remembers message IDs to drop
	// a republished one; 2 minutes when zero.
	DuplicateWindow time.Duration `koanf:"duplicate_window"`
}

// StreamDefaults configures the streams that the driver creates.
type StreamDefaults struct {
	// MaxAge is how long messages are kept; 7 days when zero.
	MaxAge time.Duration `koanf:"max_age" validate:"min=0s"`
	// MaxBytes caps each stream's size, dropping the oldest messages; zero
	// means no cap.
	MaxBytes int64 `koanf:"max_bytes" validate:"min=0"`
	// Storage is file (the default) or memory.
	Storage string `koanf:"storage" validate:"omitempty,oneof=file memory"`
	// Replicas is the number of copies in a cluster, 1 (the default) to 5.
	Replicas int `koanf:"replicas" validate:"min=0,max=5"`
	// DuplicateWindow is how long a stream remembers message IDs to drop a
	// republished one; 2 minutes when zero.
	DuplicateWindow time.Duration `koanf:"duplicate_window" validate:"min=0s"`
}

// stream returns the configuration of a stream made with d.
func (d StreamDefaults) stream(name string, subjects []string) StreamConfig {
	return StreamConfig{Name: name, Subjects: subjects, MaxAge: d.MaxAge, MaxBytes: d.MaxBytes,
		Storage: d.Storage, Replicas: d.Replicas, DuplicateWindow: d.DuplicateWindow}
}

// ConsumerConfig overrides settings for one subscription name.
type ConsumerConfig struct {
	// AckWait overrides Config.AckWait when set.
	AckWait time.Duration `koanf:"ack_wait" validate:"min=0s"`
	// MaxAckPending overrides Config.MaxAckPending when set.
	MaxAckPending int `koanf:"max_ack_pending" validate:"min=0"`
}

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	// Enabled runs the server.
	Enabled bool `koanf:"enabled"`
	// Host and Port are where it listens: 127.0.0.1 and a free port by
	// default (Port 0), so that only this machine can reach it.
	Host string `koanf:"host" default:"127.0.0.1"`
	Port int    `koanf:"port" validate:"min=0,max=65535"`
	// StoreDir is where JetStream keeps its streams, so they outlive the
	// process. Empty means a temporary directory removed on Close.
	StoreDir string `koanf:"store_dir"`
}

// ErrInvalidConfig is wrapped by every error of Validate.
var ErrInvalidConfig = errors.New("natsjs: invalid configuration")

var (
	// streamNamePattern is a JetStream stream name.
	streamNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// subjectPattern is a NATS subject, with wildcards.
	subjectPattern = regexp.MustCompile(`^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?$|^>$`)
	// prefixPattern is a subject prefix: literal tokens only.
	prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// Validate reports every problem of c, joined, each naming its full key
// in a service's configuration, such as "events.nats.streams[0].name". New
// calls it.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: events.nats.%s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if !c.Embedded.Enabled {
		for _, u := range strings.Split(c.url(), ",") {
			p, err := url.Parse(strings.TrimSpace(u))
			if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
				bad("url", "%q is not a nats:// or tls:// URL with a host", u)
				break
			}
		}
	}
	auth := 0
	for _, set := range []bool{c.User != "" || !c.Password.IsZero(), !c.Token.IsZero(), c.CredentialsFile != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		bad("user", "set at most one of user and password, token, or credentials_file")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("tls_cert_file", "tls_cert_file and tls_key_file go together")
	}
	for key, d := range map[string]time.Duration{
		"connect_timeout": c.ConnectTimeout, "reconnect_wait": c.ReconnectWait,
		"publish_timeout": c.PublishTimeout, "ack_wait": c.AckWait,
	} {
		if d < 0 {
			bad(key, "%v is negative", d)
		}
	}
	if c.PublishWindow < 0 {
		bad("publish_window", "%d is negative", c.PublishWindow)
	}
	if c.MaxAckPending < 0 {
		bad("max_ack_pending", "%d is negative", c.MaxAckPending)
	}
	if c.SubjectPrefix != "" && !prefixPattern.MatchString(c.SubjectPrefix) {
		bad("subject_prefix", "%q is not dotted tokens of letters, digits, '_' and '-'", c.SubjectPrefix)
	}
	names := map[string]bool{}
	for i, s := range c.Streams {
		key := fmt.Sprintf("streams[%d]", i)
		if !streamNamePattern.MatchString(s.Name) {
			bad(key+".name", "%q is not a stream name of letters, digits, '_' and '-'", s.Name)
		} else if names[s.Name] {
			bad(key+".name", "%q is listed twice", s.Name)
		}
		names[s.Name] = true
		if len(s.Subjects) == 0 {
			bad(key+".subjects", "at least one subject is required")
		}
		for j, sub := range s.Subjects {
			if !subjectPattern.MatchString(sub) {
				bad(fmt.Sprintf("%s.subjects[%d]", key, j), "%q is not a NATS subject", sub)
			}
		}
		s.problems(key, bad)
	}
	c.StreamDefaults.stream("", nil).problems("stream_defaults", bad)
	for name, cc := range c.Consumers {
		if cc.AckWait < 0 {
			bad("consumers."+name+".ack_wait", "%v is negative", cc.AckWait)
		}
		if cc.MaxAckPending < 0 {
			bad("consumers."+name+".max_ack_pending", "%d is negative", cc.MaxAckPending)
		}
	}
	if e := c.Embedded; e.Enabled && (e.Port < 0 || e.Port > 65535) {
		bad("embedded.port", "%d is not a port", e.Port)
	}
	return errors.Join(errs...)
}

func (s StreamConfig) problems(key string, bad func(key, format string, args ...any)) {
	switch s.Storage {
	case "", "file", "memory":
	default:
		bad(key+".storage", "%q is not file or memory", s.Storage)
	}
	if s.Replicas < 0 || s.Replicas > 5 {
		bad(key+".replicas", "%d is not between 1 and 5", s.Replicas)
	}
	if s.MaxAge < 0 {
		bad(key+".max_age", "%v is negative", s.MaxAge)
	}
	if s.MaxBytes < 0 {
		bad(key+".max_bytes", "%d is negative", s.MaxBytes)
	}
	if s.DuplicateWindow < 0 {
		bad(key+".duplicate_window", "%v is negative", s.DuplicateWindow)
	}
	if s.MaxAge > 0 && s.DuplicateWindow > s.MaxAge {
		bad(key+".duplicate_window", "%v is longer than max_age %v", s.DuplicateWindow, s.MaxAge)
	}
}

func (c Config) url() string {
	if c.URL == "" {
		return DefaultURL
	}
	return c.URL
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.PublishWindow == 0 {
		c.PublishWindow = DefaultPublishWindow
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.Embedded.Host == "" {
		c.Embedded.Host = "127.0.0.1"
	}
	return c
}
