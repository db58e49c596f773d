package authz

import (
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Option tunes New with what a configuration file cannot hold.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	logger *slog.Logger
	meters metric.MeterProvider
}

func newOptions(opts []Option) options {
	o := options{logger: slog.Default(), meters: otel.GetMeterProvider()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithLogger sets the logger of decisions and policy warnings. The
// default is slog.Default(). A nil logger keeps the default.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithMeterProvider sets where the loam.authz.decisions counter goes. The
// default is otel.GetMeterProvider(), a no-op until the application
// installs a provider. A nil provider keeps the default.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) {
		if mp != nil {
			o.meters = mp
		}
	})
}
