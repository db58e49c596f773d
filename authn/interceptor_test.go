package authn_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

const svcName = "loam.authn.test.v1.TestService"

// The test service's descriptor carries access rules, as generated code
// would, and is registered in protoregistry.GlobalFiles.
func init() {
	method := func(name string, public, stream bool) *descriptorpb.MethodDescriptorProto {
		opts := &descriptorpb.MethodOptions{}
		rule := &optionsv1.Access{Rule: &optionsv1.Access_Authenticated{Authenticated: true}}
		if public {
			rule = &optionsv1.Access{Rule: &optionsv1.Access_Public{Public: true}}
		}
		proto.SetExtension(opts, optionsv1.E_Access, rule)
		return &descriptorpb.MethodDescriptorProto{
			Name:            proto.String(name),
			InputType:       proto.String(".google.protobuf.Empty"),
			OutputType:      proto.String(".google.protobuf.StringValue"),
			Options:         opts,
			ServerStreaming: proto.Bool(stream),
		}
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("loam/authn/test/v1/test.proto"),
		Package:    proto.String("loam.authn.test.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto", "google/protobuf/wrappers.proto", "loam/options/v1/options.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("TestService"),
			Method: []*descriptorpb.MethodDescriptorProto{
				method("Public", true, false), method("Private", false, false),
				method("PublicWatch", true, true), method("Watch", false, true),
			},
		}},
	}
	_ = emptypb.File_google_protobuf_empty_proto
	_ = wrapperspb.File_google_protobuf_wrappers_proto
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
		panic(err)
	}
}

// whoami answers the principal's subject, or "anonymous".
func whoami(ctx context.Context) *wrapperspb.StringValue {
	if p, ok := authn.FromContext(ctx); ok {
		return wrapperspb.String(p.Method().String() + ":" + p.Subject())
	}
	return wrapperspb.String("anonymous")
}

func unaryMethod(name string) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(emptypb.Empty)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, _ any) (any, error) { return whoami(ctx), nil }
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + svcName + "/" + name}, h)
	}}
}

func streamMethod(name string) grpc.StreamDesc {
	return grpc.StreamDesc{StreamName: name, ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
		if err := ss.RecvMsg(new(emptypb.Empty)); err != nil {
			return err
		}
		return ss.SendMsg(whoami(ss.Context()))
	}}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: svcName,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{unaryMethod("Public"), unaryMethod("Private"), unaryMethod("Health")},
	Streams:     []grpc.StreamDesc{streamMethod("PublicWatch"), streamMethod("Watch")},
}

// serve runs the test service behind a's interceptors on an in-memory
// listener and returns a client connection with the given dial options.
func serve(t *testing.T, a *authn.Authenticator, dial ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(grpc.UnaryInterceptor(a.UnaryInterceptor), grpc.StreamInterceptor(a.StreamInterceptor))
	s.RegisterService(&serviceDesc, struct{}{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	dial = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, dial...)
	conn, err := grpc.NewClient("passthrough:///bufnet", dial...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// call invokes method (unary or server stream) and returns the answer.
func call(ctx context.Context, conn *grpc.ClientConn, method string) (string, error) {
	full := "/" + svcName + "/" + method
	out := new(wrapperspb.StringValue)
	if method != "Watch" && method != "PublicWatch" {
		err := conn.Invoke(ctx, full, &emptypb.Empty{}, out)
		return out.GetValue(), err
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return "", err
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil {
		return "", err
	}
	if err := st.CloseSend(); err != nil {
		return "", err
	}
	if err := st.RecvMsg(out); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return out.GetValue(), nil
}

func TestInterceptors(t *testing.T) {
	iss := startIssuer(t)
	// Public methods are only those named: the service package names the
	// public methods of its access table.
	a := newAuthn(t, iss, nil, authn.WithPublicMethods("/"+svcName+"/Health", "/"+svcName+"/Public", "/"+svcName+"/PublicWatch"))
	conn := serve(t, a)
	good := iss.Sign(iss.Claims(nil))
	expired := iss.Sign(iss.Claims(map[string]any{"exp": 1000}))

	tests := []struct {
		method, auth string
		want         string
		wantCode     codes.Code
	}{
		{"Private", "Bearer " + good, "token:alice", codes.OK},
		{"Private", "bearer " + good, "token:alice", codes.OK},
		{"Private", "BEARER  " + good, "token:alice", codes.OK},
		{"Private", "", "", codes.Unauthenticated},
		{"Private", "Bearer " + expired, "", codes.Unauthenticated},
		{"Private", "Basic YWxpY2U6cHc=", "", codes.Unauthenticated},
		{"Private", "Bearer", "", codes.Unauthenticated},
		{"Public", "", "anonymous", codes.OK},
		{"Public", "Bearer " + good, "token:alice", codes.OK},
		{"Public", "Bearer " + expired, "", codes.Unauthenticated},
		{"Health", "", "anonymous", codes.OK},
		{"Watch", "Bearer " + good, "token:alice", codes.OK},
		{"Watch", "", "", codes.Unauthenticated},
		{"Watch", "Bearer garbage", "", codes.Unauthenticated},
		{"PublicWatch", "", "anonymous", codes.OK},
		{"PublicWatch", "Bearer " + good, "token:alice", codes.OK},
	}
	for _, tt := range tests {
		name := tt.method + "/" + tt.auth
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if tt.auth != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.auth)
			}
			got, err := call(ctx, conn, tt.method)
			s := status.Convert(err)
			if s.Code() != tt.wantCode || got != tt.want {
				t.Fatalf("%s(%.20q) = %q, %v; want %q, %v", tt.method, tt.auth, got, err, tt.want, tt.wantCode)
			}
			if s.Code() == codes.Unauthenticated && s.Message() != "authentication required" {
				t.Errorf("%s() message = %q, want the generic \"authentication required\"", tt.method, s.Message())
			}
		})
	}
}

// TestClientCredentialsEndToEnd: a client with the service's own
// credentials calls a protected method; the issuer is asked once.
func TestClientCredentialsEndToEnd(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, nil)
	creds, err := authn.NewClientCredentials(clientConfig(iss), authn.WithoutTransportSecurity())
	if err != nil {
		t.Fatal(err)
	}
	conn := serve(t, a, grpc.WithPerRPCCredentials(creds))
	for range 3 {
		got, err := call(context.Background(), conn, "Private")
		if want := "token:service-account-" + authntest.ClientID; err != nil || got != want {
			t.Fatalf("Private() = %q, %v; want %q", got, err, want)
		}
	}
	if got := iss.TokenHits.Load(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

// TestFailureTelemetry: a refusal is counted by reason and recorded on the
// span.
func TestFailureTelemetry(t *testing.T) {
	iss := startIssuer(t)
	reader := sdkmetric.NewManualReader()
	a := newAuthn(t, iss, nil,
		authn.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		authn.WithLogger(slog.New(slog.DiscardHandler)))
	spans := tracetest.NewSpanRecorder()
	ctx, span := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)).Tracer("test").Start(context.Background(), "call")
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+iss.Sign(iss.Claims(map[string]any{"exp": 1000}))))
	if _, err := a.UnaryInterceptor(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/" + svcName + "/Private"}, okHandler); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("UnaryInterceptor(expired) = %v, want Unauthenticated", err)
	}
	span.End()

	if diff := cmp.Diff(map[string]int64{"expired": 1}, failures(t, reader)); diff != "" {
		t.Errorf("loam.authn.failures by reason (-want +got):\n%s", diff)
	}
	var events []string
	for _, s := range spans.Ended() {
		for _, e := range s.Events() {
			events = append(events, e.Name+" "+attrValue(e.Attributes, "loam.authn.reason"))
		}
	}
	if diff := cmp.Diff([]string{"loam.authn.failure expired"}, events); diff != "" {
		t.Errorf("span events (-want +got):\n%s", diff)
	}
}

func attrValue(attrs []attribute.KeyValue, key string) string {
	for _, kv := range attrs {
		if string(kv.Key) == key {
			return kv.Value.AsString()
		}
	}
	return ""
}

func TestForwardCredentials(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, nil)
	tok := iss.Sign(iss.Claims(nil))
	p, err := a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	fwd := authn.ForwardCredentials()
	tests := []struct {
		name string
		ctx  context.Context
		want map[string]string
	}{
		{"token principal", authn.NewContext(context.Background(), p), map[string]string{"authorization": "Bearer " + tok}},
		{"no principal", context.Background(), nil},
		{"mtls principal", authn.NewContext(context.Background(), authn.NewPrincipal(authn.Identity{Subject: "spiffe://x/y", Method: authn.AuthMTLS})), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fwd.GetRequestMetadata(tt.ctx)
			if err != nil || !cmp.Equal(got, tt.want, cmpEmptyMap) {
				t.Errorf("GetRequestMetadata() = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if !fwd.RequireTransportSecurity() || authn.ForwardCredentials(authn.WithoutTransportSecurity()).RequireTransportSecurity() {
		t.Error("ForwardCredentials: RequireTransportSecurity must default to true and follow WithoutTransportSecurity")
	}
	var _ credentials.PerRPCCredentials = fwd
}

var cmpEmptyMap = cmp.Comparer(func(a, b map[string]string) bool {
	return len(a) == len(b) && (len(a) == 0 || cmp.Equal(a, b))
})
