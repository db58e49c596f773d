// Package stubserver is a gRPC service for tests whose behaviour is set by
// function fields, so each test says what the server does next to what it
// checks. It has no .proto: its messages are the well-known wrappers, and
// its descriptor is hand-written.
package stubserver

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Full method names of the stub service.
const (
	Service      = "loam.test.v1.Stub"
	UnaryMethod  = "/loam.test.v1.Stub/Unary"
	StreamMethod = "/loam.test.v1.Stub/Stream"
)

// Stub implements loam.test.v1.Stub. A nil field answers Unimplemented.
type Stub struct {
	// Unary handles Unary calls.
	Unary func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	// Stream handles Stream calls, a bidirectional stream of StringValue.
	Stream func(stream grpc.ServerStream) error
}

// Register registers s on r.
func (s *Stub) Register(r grpc.ServiceRegistrar) { r.RegisterService(&desc, s) }

var desc = grpc.ServiceDesc{
	ServiceName: Service,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			s := srv.(*Stub)
			handle := func(ctx context.Context, req any) (any, error) {
				if s.Unary == nil {
					return nil, status.Error(codes.Unimplemented, "Unary not set")
				}
				return s.Unary(ctx, req.(*wrapperspb.StringValue))
			}
			if interceptor == nil {
				return handle(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: UnaryMethod}, handle)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			s := srv.(*Stub)
			if s.Stream == nil {
				return status.Error(codes.Unimplemented, "Stream not set")
			}
			return s.Stream(stream)
		},
	}},
}

// Unary calls the Unary method on cc and returns the reply's value.
func Unary(ctx context.Context, cc grpc.ClientConnInterface, in string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, UnaryMethod, wrapperspb.String(in), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// OpenStream opens a Stream call on cc.
func OpenStream(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return cc.NewStream(ctx, &desc.Streams[0], StreamMethod, opts...)
}
