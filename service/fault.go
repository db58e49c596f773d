package service

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata keys with which a request asks for a fault when
// service.faults.from_headers is on.
const (
	FaultDelayHeader = "loam-fault-delay"
	FaultAbortHeader = "loam-fault-abort"
)

// faults injects the configured delays and aborts.
type faults struct {
	rules          []faultRule
	fromHeaders    bool
	maxHeaderDelay time.Duration
}

type faultRule struct {
	service, method string // method "*" matches every method of service
	delay           time.Duration
	abort           codes.Code
	aborts          bool
	percent         float64
}

// newFaults compiles f; it returns nil when fault injection is off, and an
// error when it is on in production without allow_in_production.
func newFaults(f Faults, environment string) (*faults, error) {
	if !f.Enabled {
		return nil, nil
	}
	if environment == Production && !f.AllowInProduction {
		return nil, fmt.Errorf("service.faults.enabled: fault injection refuses to run in production; set service.faults.allow_in_production to mean it")
	}
	out := &faults{fromHeaders: f.FromHeaders, maxHeaderDelay: f.MaxHeaderDelay}
	if out.maxHeaderDelay == 0 {
		out.maxHeaderDelay = 10 * time.Second
	}
	for _, r := range f.Rules {
		svc, method, _ := splitMethodPattern(r.Method)
		fr := faultRule{service: svc, method: method, delay: r.Delay, percent: 100}
		if r.Percent != nil {
			fr.percent = *r.Percent
		}
		if r.Abort != "" {
			fr.abort, _ = codeByName(r.Abort)
			fr.aborts = true
		}
		out.rules = append(out.rules, fr)
	}
	return out, nil
}

// inject applies the first rule matching fullMethod, then any fault the
// request's headers ask for. It returns the error to send instead of
// calling the handler, or nil.
func (f *faults) inject(ctx context.Context, fullMethod string) error {
	svc, method, _ := splitMethodPattern(fullMethod)
	for _, r := range f.rules {
		if r.service != svc || (r.method != "*" && r.method != method) {
			continue
		}
		if r.percent <= 0 || (r.percent < 100 && rand.Float64()*100 >= r.percent) {
			break
		}
		if err := sleep(ctx, r.delay); err != nil {
			return err
		}
		if r.aborts {
			return status.Errorf(r.abort, "fault injected by rule for %s", fullMethod)
		}
		break
	}
	if !f.fromHeaders {
		return nil
	}
	if v := metadata.ValueFromIncomingContext(ctx, FaultDelayHeader); len(v) > 0 {
		d, err := time.ParseDuration(v[0])
		if err != nil || d < 0 {
			return status.Errorf(codes.InvalidArgument, "%s: %q is not a duration", FaultDelayHeader, v[0])
		}
		d = min(d, f.maxHeaderDelay)
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	if v := metadata.ValueFromIncomingContext(ctx, FaultAbortHeader); len(v) > 0 {
		c, ok := codeByName(v[0])
		if !ok {
			return status.Errorf(codes.InvalidArgument, "%s: %q is not a gRPC code name", FaultAbortHeader, v[0])
		}
		if c != codes.OK {
			return status.Errorf(c, "fault injected by %s", FaultAbortHeader)
		}
	}
	return nil
}

func (f *faults) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := f.inject(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (f *faults) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := f.inject(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// sleep waits for d or until ctx is done, whose error it then returns as a
// status.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
