package telemetry

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Exporter names accepted in Export.Exporter.
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout"
	ExporterOTLP   = "otlp"
)

// Protocols accepted in Export.Protocol, named as OTEL_EXPORTER_OTLP_PROTOCOL
// names them.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Config is the `telemetry` section of a Loam service's configuration. The
// zero value is valid: nothing is exported, and telemetry is a no-op.
//
// The `validate` tags let config.Load report a bad value with the file and
// line that set it; Validate checks the same rules and the ones that span
// fields, for a Config built in code.
//
// Exporter details not named here (headers, certificates, compression,
// timeouts) are read by the OTLP exporters from the standard
// OTEL_EXPORTER_OTLP_* environment variables, so credentials such as an API
// key header never need to sit in a config file.
type Config struct {
	// Traces says where spans go.
	Traces Export `koanf:"traces"`
	// Metrics says where metrics are pushed. Prometheus scraping is separate.
	Metrics Export `koanf:"metrics"`
	// Logs says where log records go, besides the process's own log output.
	Logs Export `koanf:"logs"`
	// SamplingRatio is the fraction of new traces that are sampled, from 0
	// to 1. Sampling is parent-based: a call that arrives with a sampled or
	// unsampled parent follows its parent's decision. Nil means 1.
	SamplingRatio *float64 `koanf:"sampling_ratio" validate:"omitempty,min=0,max=1"`
	// Prometheus exposes the service's metrics for scraping, on the admin
	// server's /metrics.
	Prometheus bool `koanf:"prometheus"`
	// LogLevel is the least level logged: debug, info (the default), warn or
	// error.
	LogLevel string `koanf:"log_level" validate:"omitempty,oneof=debug info warn error"`
	// LogFormat is the format of the process's own log output: json (the
	// default) or text.
	LogFormat string `koanf:"log_format" validate:"omitempty,oneof=json text"`
}

// Export configures one OpenTelemetry exporter.
type Export struct {
	// Exporter is none (the default), stdout or otlp.
	Exporter string `koanf:"exporter" validate:"omitempty,oneof=none stdout otlp"`
	// Protocol is the OTLP protocol: grpc (the default) or http/protobuf.
	Protocol string `koanf:"protocol" validate:"omitempty,oneof=grpc http/protobuf"`
	// Endpoint is the collector's address: host:port for grpc, a URL for
	// http/protobuf. Empty means the exporter's default, or
	// OTEL_EXPORTER_OTLP_ENDPOINT when set.
	Endpoint string `koanf:"endpoint"`
	// Insecure sends OTLP without TLS, for a collector on the same host.
	Insecure bool `koanf:"insecure"`
}

// Validate reports every invalid setting of c, each naming its key under
// telemetry, joined into one error.
func (c Config) Validate() error {
	var errs []error
	for _, e := range []struct {
		key string
		exp Export
	}{{"traces", c.Traces}, {"metrics", c.Metrics}, {"logs", c.Logs}} {
		if err := e.exp.validate(); err != nil {
			errs = append(errs, fmt.Errorf("telemetry.%s.%w", e.key, err))
		}
	}
	if r := c.SamplingRatio; r != nil && (*r < 0 || *r > 1) {
		errs = append(errs, fmt.Errorf("telemetry.sampling_ratio: %v is not between 0 and 1", *r))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("telemetry.log_level: %w", err))
	}
	switch c.LogFormat {
	case "", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("telemetry.log_format: %q is not json or text", c.LogFormat))
	}
	return errors.Join(errs...)
}

func (e Export) validate() error {
	switch e.Exporter {
	case "", ExporterNone, ExporterStdout:
		if e.Endpoint != "" {
			return fmt.Errorf("endpoint: set, but exporter %q sends nowhere; use exporter: otlp", e.exporter())
		}
		return nil
	case ExporterOTLP:
	default:
		return fmt.Errorf("exporter: %q is not none, stdout or otlp", e.Exporter)
	}
	switch e.Protocol {
	case "", ProtocolGRPC:
		if strings.Contains(e.Endpoint, "://") {
			return fmt.Errorf("endpoint: %q: the grpc protocol takes host:port, not a URL", e.Endpoint)
		}
	case ProtocolHTTP:
		if e.Endpoint != "" {
			if u, err := url.Parse(e.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("endpoint: %q: the http/protobuf protocol takes an http or https URL", e.Endpoint)
			}
		}
	default:
		return fmt.Errorf("protocol: %q is not grpc or http/protobuf", e.Protocol)
	}
	return nil
}

func (e Export) exporter() string {
	if e.Exporter == "" {
		return ExporterNone
	}
	return e.Exporter
}

func (c Config) samplingRatio() float64 {
	if c.SamplingRatio == nil {
		return 1
	}
	return *c.SamplingRatio
}
