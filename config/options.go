package config

import (
	"flag"
	"log/slog"
	"time"
)

// Option configures Load, Explain and Watch.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	dir       string
	dirSet    bool
	env       string
	envPrefix string
	flags     *flag.FlagSet
	debounce  time.Duration
	logger    *slog.Logger
	// secretRefs leaves "file:" secrets unread.
	secretRefs bool
}

func newOptions(opts []Option) options {
	o := options{dir: "config", debounce: 100 * time.Millisecond, logger: slog.Default()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithDir sets the directory holding base.{yaml,yml,json,toml} and the
// per-environment files. The default is "config", and when that default
// directory does not exist the file layers are simply empty; a directory set
// with WithDir must exist.
func WithDir(dir string) Option {
	return optionFunc(func(o *options) { o.dir, o.dirSet = dir, true })
}

// WithEnvironment chooses the environment, whose file <name>.{yaml,...}
// overrides the base file. Without it the environment is the value of the
// --env flag when WithFlags is given and the flag was set, else the LOAM_ENV
// environment variable, else "development". The name may not be "base" nor
// contain a path separator.
func WithEnvironment(name string) Option {
	return optionFunc(func(o *options) { o.env = name })
}

// WithEnvPrefix turns on the environment-variable layer for variables named
// PREFIX_...: the rest of the name is lower-cased, a double underscore nests
// and a single underscore stays inside a key, so with prefix "CAPTURES"
// CAPTURES_SERVICE__LISTEN_ADDR sets service.listen_addr. A variable with the
// prefix that names no key is an unknown-key error. LOAM_ENV is never read
// as a key. Without this option no environment variable is read as a key.
func WithEnvPrefix(prefix string) Option {
	return optionFunc(func(o *options) { o.envPrefix = prefix })
}

// WithSecretFilesUnread leaves "file:" secrets unread: such a Secret holds
// its reference ("file:/run/secrets/db") instead of the file's content, and
// a file that is not there is no error. It is for tools that check a
// configuration away from where its secrets are mounted, such as
// `loam config validate` and `loam doctor`; a service must not use it.
func WithSecretFilesUnread() Option {
	return optionFunc(func(o *options) { o.secretRefs = true })
}

// WithFlags adds the flag layer, the highest. Only flags set explicitly on
// the command line count (fs.Visit, so call it after fs.Parse): a flag whose
// name is a key path (--service.listen_addr=:9090) overrides that key. A set
// flag whose name contains a dot but names no key is an unknown-key error;
// other flags without a dot (--verbose) belong to the program and are
// ignored. A flag named "env" chooses the environment (see WithEnvironment).
func WithFlags(fs *flag.FlagSet) Option {
	return optionFunc(func(o *options) { o.flags = fs })
}

// WithDebounce sets how long Watch waits after the last file event of a
// burst before it reloads. The default is 100ms. Load and Explain ignore it.
func WithDebounce(d time.Duration) Option {
	return optionFunc(func(o *options) { o.debounce = d })
}

// WithLogger sets the logger that Load, Explain and Watch write warnings to:
// conditions that do not make the configuration invalid but that an
// operator should hear of (see "Warnings" in the package documentation).
// The default is slog.Default() at the time of the call; a nil logger
// discards warnings.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		o.logger = l
	})
}
