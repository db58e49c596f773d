package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	otelcodes "go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Messages sent to clients instead of what went wrong inside the server.
const (
	panicMessage   = "internal error"
	unknownMessage = "unknown error"
)

// panicked records a handler's panic with its stack in the log and the
// span, and returns the generic error the client sees.
func panicked(ctx context.Context, log *slog.Logger, method string, r any) error {
	stack := string(debug.Stack())
	log.ErrorContext(ctx, "handler panicked", "rpc.method", method, "panic", fmt.Sprint(r), "stack", stack)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("exception", trace.WithAttributes(
			semconv.ExceptionType(fmt.Sprintf("%T", r)),
			semconv.ExceptionMessage(fmt.Sprint(r)),
			semconv.ExceptionStacktrace(stack),
		))
		span.SetStatus(otelcodes.Error, "panic")
	}
	return status.Error(codes.Internal, panicMessage)
}

// sanitize lets through a gRPC status error that the handler returned as
// it is, maps context errors to their codes, and replaces any other error,
// whose text may hold internals, after logging it. An error that wraps a
// status ("query %s: %w") is sent as that status alone: grpc-go would send
// the whole err.Error(), wrapping text included, as the message. Anything
// else is a generic Unknown.
func sanitize(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err // a status made on purpose, not wrapped
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	out := status.Error(codes.Unknown, unknownMessage)
	var wrapped interface{ GRPCStatus() *status.Status }
	if errors.As(err, &wrapped) {
		out = wrapped.GRPCStatus().Err()
	}
	log.ErrorContext(ctx, "handler returned an error that is not a status", "rpc.method", method, "error", err,
		"sent", status.Code(out).String())
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.RecordError(err)
	}
	return out
}
