package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutlog"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/log/global"
	lognoop "go.opentelemetry.io/otel/log/noop"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds the tracer, meter and logger providers of a service, the
// propagator, the service's *slog.Logger and, when enabled, the Prometheus
// handler. It is safe for concurrent use.
//
// Call Shutdown once the service stops serving: it flushes what is buffered
// and releases the exporters. After Shutdown, the providers drop what they
// are given.
type Telemetry struct {
	tp      trace.TracerProvider
	mp      metric.MeterProvider
	lp      otellog.LoggerProvider
	prop    propagation.TextMapPropagator
	logger  *slog.Logger
	metrics http.Handler
	level   slog.LevelVar
	global  bool     // made by Global: the logger is slog's default
	sampler *sampler // the root sampler, when New built the tracer provider
	w3c     bool     // prop is the W3C trace context and baggage propagator New builds

	shutdowns []func(context.Context) error
	once      sync.Once
	err       error
}

// Option configures New and Setup with what cannot come from a config file.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	name, version, env string
	spanExporters      []sdktrace.SpanExporter
	metricReaders      []sdkmetric.Reader
	logOutput          io.Writer
	stdout             io.Writer
}

// WithService names the service in the resource of every span, metric and
// log record: service.name, service.version and deployment.environment.name.
func WithService(name, version, environment string) Option {
	return optionFunc(func(o *options) { o.name, o.version, o.env = name, version, environment })
}

// WithSpanExporter adds an exporter that receives every sampled span as soon
// as it ends, such as an in-memory exporter in a test. It turns tracing on
// even when the configuration exports spans nowhere.
func WithSpanExporter(e sdktrace.SpanExporter) Option {
	return optionFunc(func(o *options) { o.spanExporters = append(o.spanExporters, e) })
}

// WithMetricReader adds a reader of the service's metrics, such as a manual
// reader in a test. It turns metrics on.
func WithMetricReader(r sdkmetric.Reader) Option {
	return optionFunc(func(o *options) { o.metricReaders = append(o.metricReaders, r) })
}

// WithLogOutput sets where the service's own log lines are written; the
// default is standard error.
func WithLogOutput(w io.Writer) Option {
	return optionFunc(func(o *options) { o.logOutput = w })
}

// WithStdout sets where the stdout exporters write; the default is standard
// output.
func WithStdout(w io.Writer) Option {
	return optionFunc(func(o *options) { o.stdout = w })
}

// New builds the providers that cfg and opts describe, without installing
// them as the OpenTelemetry globals. Signals that nothing exports use the
// no-op providers of the OpenTelemetry API.
//
// It fails when cfg is invalid (the error names every bad key) or an
// exporter cannot be created; nothing is left running then. OTLP exporters
// connect lazily, so an unreachable collector does not fail New.
func New(ctx context.Context, cfg Config, opts ...Option) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{logOutput: os.Stderr, stdout: os.Stdout}
	for _, opt := range opts {
		opt.apply(&o)
	}
	t := &Telemetry{
		tp:   tracenoop.NewTracerProvider(),
		mp:   metricnoop.NewMeterProvider(),
		lp:   lognoop.NewLoggerProvider(),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		w3c:  true,
	}
	fail := func(err error) (*Telemetry, error) {
		_ = t.Shutdown(ctx)
		return nil, err
	}

	res, err := newResource(ctx, o)
	if err != nil {
		return fail(fmt.Errorf("telemetry: resource: %w", err))
	}

	// Traces.
	if cfg.Traces.exporter() != ExporterNone || len(o.spanExporters) > 0 {
		t.sampler = newSampler(cfg.samplingRatio())
		topts := []sdktrace.TracerProviderOption{
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(t.sampler)),
		}
		if exp, err := newSpanExporter(ctx, cfg.Traces, o.stdout); err != nil {
			return fail(fmt.Errorf("telemetry.traces: %w", err))
		} else if exp != nil {
			topts = append(topts, sdktrace.WithBatcher(exp))
		}
		for _, exp := range o.spanExporters {
			topts = append(topts, sdktrace.WithSyncer(exp))
		}
		tp := sdktrace.NewTracerProvider(topts...)
		t.tp = tp
		t.shutdowns = append(t.shutdowns, tp.Shutdown)
	}

	// Metrics.
	readers := o.metricReaders
	if cfg.Prometheus {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return fail(fmt.Errorf("telemetry.prometheus: %w", err))
		}
		readers = append(readers, exp)
		t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil})
	}
	if r, err := newMetricReader(ctx, cfg.Metrics, o.stdout); err != nil {
		return fail(fmt.Errorf("telemetry.metrics: %w", err))
	} else if r != nil {
		readers = append(readers, r)
	}
	if len(readers) > 0 {
		mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
		for _, r := range readers {
			mopts = append(mopts, sdkmetric.WithReader(r))
		}
		mp := sdkmetric.NewMeterProvider(mopts...)
		t.mp = mp
		t.shutdowns = append(t.shutdowns, mp.Shutdown)
	}

	// Logs.
	if exp, err := newLogExporter(ctx, cfg.Logs, o.stdout); err != nil {
		return fail(fmt.Errorf("telemetry.logs: %w", err))
	} else if exp != nil {
		lp := sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(sdklog.NewBatchProcessor(exp)))
		t.lp = lp
		t.shutdowns = append(t.shutdowns, lp.Shutdown)
	}
	level, _ := parseLevel(cfg.LogLevel)
	t.level.Set(level)
	t.logger = slog.New(newLogHandler(o.logOutput, cfg.LogFormat, &t.level, t.lp, exporting(cfg.Logs), o.name))
	return t, nil
}

// Setup is New, then installs the providers and the propagator as the
// OpenTelemetry globals and the logger as slog's default, so libraries that
// use the globals report into the same pipeline. Call it once, early in
// main.
func Setup(ctx context.Context, cfg Config, opts ...Option) (*Telemetry, error) {
	t, err := New(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	t.SetGlobal()
	return t, nil
}

// SetGlobal installs t's providers and propagator as the OpenTelemetry
// globals and its logger as slog's default. The globals keep pointing at
// t after t.Shutdown.
func (t *Telemetry) SetGlobal() {
	otel.SetTracerProvider(t.tp)
	otel.SetMeterProvider(t.mp)
	otel.SetTextMapPropagator(t.prop)
	global.SetLoggerProvider(t.lp)
	slog.SetDefault(t.logger)
}

// Global returns a Telemetry over the current OpenTelemetry globals and
// slog's default logger: what Setup installed, or the API's no-ops. Its
// Shutdown does nothing; the owner of the globals shuts them down.
func Global() *Telemetry {
	return &Telemetry{
		tp:     otel.GetTracerProvider(),
		mp:     otel.GetMeterProvider(),
		lp:     global.GetLoggerProvider(),
		prop:   otel.GetTextMapPropagator(),
		logger: slog.Default(),
		global: true,
	}
}

// TracerProvider returns the tracer provider; a no-op one when nothing
// exports spans.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the meter provider; a no-op one when nothing reads
// metrics.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// LoggerProvider returns the OpenTelemetry logger provider; a no-op one when
// nothing exports logs.
func (t *Telemetry) LoggerProvider() otellog.LoggerProvider { return t.lp }

// Propagator returns the W3C trace context and baggage propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.prop }

// Logger returns the service's logger: every record carries trace_id and
// span_id when its context holds a span, and goes to the OpenTelemetry
// logger provider too when logs are exported.
func (t *Telemetry) Logger() *slog.Logger { return t.logger }

// SetLogLevel changes the least level Logger logs, while it runs: debug,
// info, warn or error (telemetry.log_level). A bad name changes nothing,
// and so does a Telemetry from Global, whose logger is slog's default.
func (t *Telemetry) SetLogLevel(name string) error {
	l, err := parseLevel(name)
	if err != nil {
		return fmt.Errorf("telemetry.log_level: %w", err)
	}
	if t.global {
		return errors.New("telemetry: the logger of Global is slog's default, whose level this Telemetry does not own")
	}
	t.level.Set(l)
	return nil
}

// MetricsHandler returns the Prometheus exposition handler, or nil when
// Config.Prometheus is off.
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics }

// Shutdown flushes every exporter and stops the providers. It is
// idempotent: later calls return the first call's result. ctx bounds the
// flush.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.once.Do(func() {
		var errs []error
		for i := len(t.shutdowns) - 1; i >= 0; i-- {
			if err := t.shutdowns[i](ctx); err != nil {
				errs = append(errs, err)
			}
		}
		t.err = errors.Join(errs...)
	})
	return t.err
}

func newResource(ctx context.Context, o options) (*resource.Resource, error) {
	var attrs []attribute.KeyValue
	if o.name != "" {
		attrs = append(attrs, semconv.ServiceName(o.name))
	}
	if o.version != "" {
		attrs = append(attrs, semconv.ServiceVersion(o.version))
	}
	if o.env != "" {
		attrs = append(attrs, semconv.DeploymentEnvironmentNameKey.String(o.env))
	}
	// Attributes given in code win over OTEL_RESOURCE_ATTRIBUTES: later
	// detectors override earlier ones.
	return resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
		resource.WithAttributes(attrs...),
	)
}

func exporting(e Export) bool { return e.exporter() != ExporterNone }

// endpointOptions returns the exporter options that e's endpoint and
// insecure settings ask for, built with the exporter package's own option
// constructors.
func endpointOptions[O any](e Export, endpoint func(string) O, insecure func() O) []O {
	var opts []O
	if e.Endpoint != "" {
		opts = append(opts, endpoint(e.Endpoint))
	}
	if e.Insecure {
		opts = append(opts, insecure())
	}
	return opts
}

func newSpanExporter(ctx context.Context, e Export, stdout io.Writer) (sdktrace.SpanExporter, error) {
	switch e.exporter() {
	case ExporterStdout:
		return stdouttrace.New(stdouttrace.WithWriter(stdout))
	case ExporterOTLP:
		if e.Protocol == ProtocolHTTP {
			return otlptracehttp.New(ctx, endpointOptions(e, otlptracehttp.WithEndpointURL, otlptracehttp.WithInsecure)...)
		}
		return otlptracegrpc.New(ctx, endpointOptions(e, otlptracegrpc.WithEndpoint, otlptracegrpc.WithInsecure)...)
	}
	return nil, nil
}

func newMetricReader(ctx context.Context, e Export, stdout io.Writer) (sdkmetric.Reader, error) {
	var exp sdkmetric.Exporter
	var err error
	switch e.exporter() {
	case ExporterStdout:
		exp, err = stdoutmetric.New(stdoutmetric.WithWriter(stdout))
	case ExporterOTLP:
		if e.Protocol == ProtocolHTTP {
			exp, err = otlpmetrichttp.New(ctx, endpointOptions(e, otlpmetrichttp.WithEndpointURL, otlpmetrichttp.WithInsecure)...)
		} else {
			exp, err = otlpmetricgrpc.New(ctx, endpointOptions(e, otlpmetricgrpc.WithEndpoint, otlpmetricgrpc.WithInsecure)...)
		}
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return sdkmetric.NewPeriodicReader(exp), nil
}

func newLogExporter(ctx context.Context, e Export, stdout io.Writer) (sdklog.Exporter, error) {
	switch e.exporter() {
	case ExporterStdout:
		return stdoutlog.New(stdoutlog.WithWriter(stdout))
	case ExporterOTLP:
		if e.Protocol == ProtocolHTTP {
			return otlploghttp.New(ctx, endpointOptions(e, otlploghttp.WithEndpointURL, otlploghttp.WithInsecure)...)
		}
		return otlploggrpc.New(ctx, endpointOptions(e, otlploggrpc.WithEndpoint, otlploggrpc.WithInsecure)...)
	}
	return nil, nil
}
