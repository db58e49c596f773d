package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/trace"
)

// Keys of the attributes that NewLogHandler adds, as the OpenTelemetry log
// data model names them.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// NewLogHandler returns an slog.Handler that adds the trace_id and span_id
// of the span in each record's context to every record it passes to next, so
// a log line can be found from its trace and the other way round. When lp is
// not nil, every record next accepts is also emitted through the
// OpenTelemetry logger provider lp, correlated with the same span.
func NewLogHandler(next slog.Handler, lp otellog.LoggerProvider) slog.Handler {
	var h slog.Handler = traceHandler{next}
	if lp != nil {
		h = fanout{h, otelslog.NewHandler(scopeName, otelslog.WithLoggerProvider(lp))}
	}
	return h
}

func newLogHandler(w io.Writer, format string, level slog.Leveler, lp otellog.LoggerProvider, export bool, service string) slog.Handler {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationString}
	var base slog.Handler
	if format == "text" {
		base = slog.NewTextHandler(w, opts)
	} else {
		base = slog.NewJSONHandler(w, opts)
	}
	if service != "" {
		base = base.WithAttrs([]slog.Attr{slog.String("service", service)})
	}
	if !export {
		lp = nil
	}
	return NewLogHandler(base, lp)
}

// durationString writes durations as Go duration strings ("1.5s") rather
// than the integer nanoseconds slog's handlers write, so a person can read
// them and a query can still parse them.
func durationString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// parseLevel parses a log level name; empty means info.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// traceHandler adds the IDs of the span in the record's context.
type traceHandler struct{ next slog.Handler }

func (h traceHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String(TraceIDKey, sc.TraceID().String()), slog.String(SpanIDKey, sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.next.WithAttrs(as)}
}
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.next.WithGroup(name)}
}

// fanout sends what local accepts to local and to the OpenTelemetry bridge,
// so both see the same records at the same level.
type fanout struct{ local, bridge slog.Handler }

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool { return f.local.Enabled(ctx, l) }

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	err := f.local.Handle(ctx, r)
	if f.bridge.Enabled(ctx, r.Level) {
		if berr := f.bridge.Handle(ctx, r); err == nil {
			err = berr
		}
	}
	return err
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	return fanout{f.local.WithAttrs(as), f.bridge.WithAttrs(as)}
}

func (f fanout) WithGroup(name string) slog.Handler {
	return fanout{f.local.WithGroup(name), f.bridge.WithGroup(name)}
}
