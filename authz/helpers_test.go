package authz_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/internal/stubserver"
	_ "github.com/loamhq/loam/proto/loam/options/v1" // registers options.proto, which farmProto imports
)

// farmProto is the contract of the tests, as protoc would hand it over.
// FarmService is annotated throughout; the other services each break one
// rule, and a test includes them only when it wants New to fail.
const farmProto = `
name: "loam/authztest/v1/farm.proto"
package: "loam.authztest.v1"
syntax: "proto3"
dependency: "loam/options/v1/options.proto"
message_type {
  name: "PlantRequest"
  field { name: "planter_id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL json_name: "planterId" }
  field { name: "count" number: 2 type: TYPE_INT64 label: LABEL_OPTIONAL json_name: "count" }
}
service {
  name: "FarmService"
  method { name: "Survey" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { public: true } } }
  method { name: "Inspect" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true } } }
  method { name: "Harvest" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { permission: "farm.harvest" } } }
  method { name: "Plant" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { permission: "farm.plant" condition: "request.planter_id == principal.subject" } } }
  method { name: "Divide" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true condition: "100 / request.count > 1" } } }
  method { name: "Tenant" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true condition: "principal.claims['tenant'] == 'acme'" } } }
  method { name: "Loop" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true condition: "[1,2,3,4,5,6,7,8,9,10].all(x, [1,2,3,4,5,6,7,8,9,10].all(y, [1,2,3,4,5,6,7,8,9,10].all(z, x + y + z > 0)))" } } }
  method { name: "Watch" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest" server_streaming: true
    options { [loam.options.v1.access] { permission: "farm.watch" condition: "request.planter_id == principal.subject" } } }
  method { name: "Upload" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest" client_streaming: true
    options { [loam.options.v1.access] { permission: "farm.upload" } } }
}
service {
  name: "BarnService"
  method { name: "Open" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest" }
  method { name: "Close" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest" }
  method { name: "Paint" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { permission: "barn.paint" } } }
}
service {
  name: "BrokenService"
  method { name: "MissingField" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true condition: "request.gardener_id == principal.subject" } } }
  method { name: "NotBool" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true condition: "request.planter_id" } } }
  method { name: "PrincipalTypo" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest"
    options { [loam.options.v1.access] { authenticated: true condition: "principal.subjet == 'x'" } } }
  method { name: "StreamIn" input_type: ".loam.authztest.v1.PlantRequest" output_type: ".loam.authztest.v1.PlantRequest" client_streaming: true
    options { [loam.options.v1.access] { authenticated: true condition: "request.planter_id == principal.subject" } } }
}`

const (
	farm   = "loam.authztest.v1.FarmService"
	barn   = "loam.authztest.v1.BarnService"
	broken = "loam.authztest.v1.BrokenService"
)

var farmFile = sync.OnceValue(func() protoreflect.FileDescriptor {
	fdp := new(descriptorpb.FileDescriptorProto)
	if err := prototext.Unmarshal([]byte(farmProto), fdp); err != nil {
		panic(err)
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
		panic(err)
	}
	return fd
})

// plantRequest returns a PlantRequest with the given fields.
func plantRequest(planter string, count int64) *dynamicpb.Message {
	md := farmFile().Messages().ByName("PlantRequest")
	m := dynamicpb.NewMessage(md)
	m.Set(md.Fields().ByName("planter_id"), protoreflect.ValueOfString(planter))
	m.Set(md.Fields().ByName("count"), protoreflect.ValueOfInt64(count))
	return m
}

// handler answers every call of a described service: unary calls echo the
// request; streams echo every message they receive.
type handler struct{}

// serviceDesc builds a grpc.ServiceDesc for the descriptor of service
// name, with handlers that decode into dynamicpb.
func serviceDesc(name string) *grpc.ServiceDesc {
	sd := farmFile().Services().ByName(protoreflect.FullName(name).Name())
	desc := &grpc.ServiceDesc{ServiceName: name, HandlerType: (*any)(nil)}
	methods := sd.Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		full := "/" + name + "/" + string(md.Name())
		if !md.IsStreamingClient() && !md.IsStreamingServer() {
			desc.Methods = append(desc.Methods, grpc.MethodDesc{
				MethodName: string(md.Name()),
				Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
					in := dynamicpb.NewMessage(md.Input())
					if err := dec(in); err != nil {
						return nil, err
					}
					h := func(ctx context.Context, req any) (any, error) { return req, nil }
					if ic == nil {
						return h(ctx, in)
					}
					return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
				},
			})
			continue
		}
		desc.Streams = append(desc.Streams, grpc.StreamDesc{
			StreamName:    string(md.Name()),
			ServerStreams: md.IsStreamingServer(),
			ClientStreams: md.IsStreamingClient(),
			Handler: func(srv any, ss grpc.ServerStream) error {
				var last proto.Message
				for {
					in := dynamicpb.NewMessage(md.Input())
					if err := ss.RecvMsg(in); err == io.EOF {
						break
					} else if err != nil {
						return err
					}
					if !md.IsStreamingServer() {
						last = in
						continue
					}
					if err := ss.SendMsg(in); err != nil {
						return err
					}
				}
				if last != nil {
					return ss.SendMsg(last)
				}
				return nil
			},
		})
	}
	return desc
}

// services returns what GetServiceInfo returns for a server with the
// named described services.
func services(names ...string) map[string]grpc.ServiceInfo {
	s := grpc.NewServer()
	register(s, names...)
	return s.GetServiceInfo()
}

// register registers the named services on s: described ones by their
// full name, "stub" for internal/stubserver, "health" for grpc-go's health
// server.
func register(s *grpc.Server, names ...string) {
	for _, n := range names {
		switch n {
		case "stub":
			(&stubserver.Stub{
				Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) { return in, nil },
			}).Register(s)
		case "health":
			healthpb.RegisterHealthServer(s, health.NewServer())
		default:
			s.RegisterService(serviceDesc(n), handler{})
		}
	}
}

// principal returns a principal with subject and roles.
func principal(subject string, roles ...string) *authn.Principal {
	return authn.NewPrincipal(authn.Identity{Subject: subject, Issuer: "https://issuer.test", Roles: roles, Method: authn.AuthToken})
}

// Metadata keys read by fakeAuthn.
const (
	subjectKey = "x-test-subject"
	rolesKey   = "x-test-roles"
)

// fakeAuthn stands for authn's interceptors in end-to-end tests: it makes
// a principal from plain metadata.
func fakeAuthn(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	sub := md.Get(subjectKey)
	if len(sub) == 0 {
		return ctx
	}
	var roles []string
	if r := md.Get(rolesKey); len(r) > 0 && r[0] != "" {
		roles = strings.Split(r[0], ",")
	}
	return authn.NewContext(ctx, principal(sub[0], roles...))
}

type wrapped struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrapped) Context() context.Context { return w.ctx }

// serve starts a loopback server of the named services (see register)
// with fakeAuthn then the given interceptors, and returns a client
// connection to it.
func serve(t testing.TB, unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor, names ...string) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(fakeAuthn(ctx), req)
		}, unary),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &wrapped{ServerStream: ss, ctx: fakeAuthn(ss.Context())})
		}, stream))
	register(s, names...)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// callAs returns a context whose calls carry subject and roles for
// fakeAuthn; an empty subject means no principal.
func callAs(subject string, roles ...string) context.Context {
	if subject == "" {
		return context.Background()
	}
	return metadata.AppendToOutgoingContext(context.Background(), subjectKey, subject, rolesKey, strings.Join(roles, ","))
}

func fullMethod(svc, m string) string { return fmt.Sprintf("/%s/%s", svc, m) }

// discard is the logger of tests that do not look at the log.
var discard = slog.New(slog.DiscardHandler)
