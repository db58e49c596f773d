package service

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/loamhq/loam/telemetry"
)

// DialOption configures Dial.
type DialOption interface{ applyDial(*dialOptions) }

type dialOptionFunc func(*dialOptions)

func (f dialOptionFunc) applyDial(o *dialOptions) { f(o) }

type dialOptions struct {
	settings   ClientSettings
	tel        *telemetry.Telemetry
	creds      credentials.TransportCredentials
	perRPC     []credentials.PerRPCCredentials
	retryExtra []string
	grpcOpts   []grpc.DialOption
}

// WithClientSettings sets the deadline and retry defaults, usually from the
// `service.client` section. Zero fields, and all of them without this
// option, take the section's defaults: a 10s deadline and 3 attempts with
// 100ms-1s backoff.
func WithClientSettings(s ClientSettings) DialOption {
	return dialOptionFunc(func(o *dialOptions) { o.settings = s })
}

// WithClientTelemetry makes the connection report through t; the default is
// the OpenTelemetry globals (Server.Dial defaults to the server's own).
func WithClientTelemetry(t *telemetry.Telemetry) DialOption {
	return dialOptionFunc(func(o *dialOptions) { o.tel = t })
}

// WithTransportCredentials secures the connection, with TLS or mTLS
// credentials. The default is plaintext, for a service mesh that encrypts
// between sidecars or for loopback.
func WithTransportCredentials(c credentials.TransportCredentials) DialOption {
	return dialOptionFunc(func(o *dialOptions) { o.creds = c })
}

// WithPerRPCCredentials attaches credentials to every call, such as the
// service's own token from an authn token source, or the caller's token
// forwarded.
func WithPerRPCCredentials(c credentials.PerRPCCredentials) DialOption {
	return dialOptionFunc(func(o *dialOptions) { o.perRPC = append(o.perRPC, c) })
}

// WithRetryMethods retries these methods too (full names,
// /package.Service/Method), besides those whose proto declares them
// idempotent.
func WithRetryMethods(fullMethods ...string) DialOption {
	return dialOptionFunc(func(o *dialOptions) { o.retryExtra = append(o.retryExtra, fullMethods...) })
}

// WithDialOptions adds grpc.DialOptions after Loam's own.
func WithDialOptions(opts ...grpc.DialOption) DialOption {
	return dialOptionFunc(func(o *dialOptions) { o.grpcOpts = append(o.grpcOpts, opts...) })
}

// Dial returns a client connection to target (any gRPC target, such as
// "dns:///captures:8080") set up as Loam services call each other:
//
//   - traced and measured by telemetry's client stats handler, which
//     propagates W3C trace context;
//   - a default deadline on unary calls whose context has none;
//   - retries of calls that fail with UNAVAILABLE, through gRPC's service
//     config, for methods whose proto declares
//     `option idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS` (found in
//     the protobuf registry of the binary) and those named by
//     WithRetryMethods;
//   - per-RPC credentials from WithPerRPCCredentials.
//
// Like grpc.NewClient, Dial does not connect: the first call does, and ctx
// only bounds the set-up. The caller closes the connection.
func Dial(ctx context.Context, target string, opts ...DialOption) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o dialOptions
	for _, opt := range opts {
		opt.applyDial(&o)
	}
	o.settings = o.settings.withDefaults()
	if o.tel == nil {
		o.tel = telemetry.Global()
	}
	if o.creds == nil {
		o.creds = insecure.NewCredentials()
	}
	sc, err := serviceConfig(o.settings, o.retryExtra)
	if err != nil {
		return nil, err
	}
	gopts := []grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithDefaultServiceConfig(sc),
	}
	if o.tel.Recording() {
		gopts = append(gopts, grpc.WithStatsHandler(o.tel.ClientHandler()))
	} else {
		unary, stream := o.tel.ClientPassThrough()
		gopts = append(gopts, grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))
	}
	if t := o.settings.Timeout; t > 0 {
		gopts = append(gopts, grpc.WithChainUnaryInterceptor(defaultDeadline(t)))
	}
	for _, c := range o.perRPC {
		gopts = append(gopts, grpc.WithPerRPCCredentials(c))
	}
	conn, err := grpc.NewClient(target, append(gopts, o.grpcOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("service: dial %s: %w", target, err)
	}
	return conn, nil
}

// defaultDeadline gives unary calls without a deadline the timeout d.
func defaultDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// serviceConfig returns the gRPC service config JSON with a retry policy
// for the idempotent methods of the registry and the extra methods.
func serviceConfig(s ClientSettings, extra []string) (string, error) {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method,omitempty"`
	}
	var names []name
	seen := map[string]bool{}
	add := func(svc, method string) {
		if key := svc + "/" + method; !seen[key] {
			seen[key] = true
			names = append(names, name{svc, method})
		}
	}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				opts, _ := md.Options().(*descriptorpb.MethodOptions)
				switch opts.GetIdempotencyLevel() {
				case descriptorpb.MethodOptions_IDEMPOTENT, descriptorpb.MethodOptions_NO_SIDE_EFFECTS:
					add(string(sd.FullName()), string(md.Name()))
				}
			}
		}
		return true
	})
	for _, m := range extra {
		svc, method, ok := splitMethodPattern(m)
		if !ok || method == "*" {
			return "", fmt.Errorf("service: retry method %q is not /package.Service/Method", m)
		}
		add(svc, method)
	}
	sort.Slice(names, func(i, j int) bool {
		return names[i].Service+"/"+names[i].Method < names[j].Service+"/"+names[j].Method
	})
	type retryPolicy struct {
		MaxAttempts          int      `json:"maxAttempts"`
		InitialBackoff       string   `json:"initialBackoff"`
		MaxBackoff           string   `json:"maxBackoff"`
		BackoffMultiplier    float64  `json:"backoffMultiplier"`
		RetryableStatusCodes []string `json:"retryableStatusCodes"`
	}
	type methodConfig struct {
		Name        []name       `json:"name"`
		RetryPolicy *retryPolicy `json:"retryPolicy,omitempty"`
	}
	var cfg struct {
		MethodConfig []methodConfig `json:"methodConfig,omitempty"`
	}
	if len(names) > 0 && s.RetryMaxAttempts > 1 {
		cfg.MethodConfig = []methodConfig{{
			Name: names,
			RetryPolicy: &retryPolicy{
				MaxAttempts:          s.RetryMaxAttempts,
				InitialBackoff:       seconds(s.RetryInitialBackoff),
				MaxBackoff:           seconds(s.RetryMaxBackoff),
				BackoffMultiplier:    2,
				RetryableStatusCodes: []string{"UNAVAILABLE"},
			},
		}}
	}
	b, err := json.Marshal(cfg)
	return string(b), err
}

// seconds formats d as the service config's duration: decimal seconds with
// an "s" suffix.
func seconds(d time.Duration) string {
	return fmt.Sprintf("%gs", d.Seconds())
}

// Dial is the package's Dial with the server's telemetry and its
// service.client settings as defaults (opts may override them), so the
// calls a handler makes continue the trace of the call it serves through
// this server's own propagator, with no OpenTelemetry globals installed.
func (s *Server) Dial(ctx context.Context, target string, opts ...DialOption) (*grpc.ClientConn, error) {
	defaults := []DialOption{WithClientTelemetry(s.tel), WithClientSettings(s.cfg.Service.Client)}
	return Dial(ctx, target, append(defaults, opts...)...)
}
