package service_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/devissuer"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// denyAll refuses every unary call; a test gives it as half a slot.
func denyAll(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
	return nil, status.Error(codes.PermissionDenied, "denied")
}

func TestHalfSlotIsRefused(t *testing.T) {
	for name, opt := range map[string]service.Option{
		"WithAuthentication": service.WithAuthentication(service.InterceptorFuncs(denyAll, nil)),
		"WithAuthorization":  service.WithAuthorization(service.InterceptorFuncs(denyAll, nil)),
		"WithInterceptors":   service.WithInterceptors(service.InterceptorFuncs(nil, nil)),
	} {
		_, err := service.New(t.Context(), testConfig(), opt, service.WithTelemetry(quietTelemetry(t)))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("New(%s with a nil half) = %v, want a refusal naming %s", name, err, name)
		}
	}
	if _, err := service.New(t.Context(), testConfig(), service.WithAuthentication(nil), service.WithTelemetry(quietTelemetry(t))); err == nil {
		t.Error("New(WithAuthentication(nil)) = nil, want a refusal")
	}
}

// authenticatedStub is testConfig with the stub's methods needing a
// principal.
func authenticatedStub() service.Config {
	cfg := testConfig()
	cfg.Authz.Rules = map[string]authz.Rule{"/" + stubserver.Service + "/*": {Authenticated: true}}
	return cfg
}

func TestNoAuthenticationNeedsOptIn(t *testing.T) {
	t.Run("refused while methods need a principal", func(t *testing.T) {
		srv, err := service.New(t.Context(), authenticatedStub(), service.WithTelemetry(quietTelemetry(t)), service.WithoutSignals())
		if err != nil {
			t.Fatal(err)
		}
		stub().Register(srv)
		err = srv.Check()
		for _, want := range []string{"no authentication", stubserver.UnaryMethod, "allow_unauthenticated"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Check() = %v, want it to name %q", err, want)
			}
		}
	})
	t.Run("allow_unauthenticated opens every method", func(t *testing.T) {
		cfg := authenticatedStub()
		cfg.Service.AllowUnauthenticated = true
		r := start(t, cfg, stub())
		if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
			t.Errorf("call = %v, want OK", err)
		}
		if !strings.Contains(r.logs.String(), "allow_unauthenticated") {
			t.Errorf("log does not warn that every method is open:\n%s", r.logs.String())
		}
	})
	t.Run("public methods need no opt-in", func(t *testing.T) {
		r := start(t, testConfig(), stub())
		if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
			t.Errorf("call = %v, want OK", err)
		}
	})
	for name, edit := range map[string]func(*service.Config){
		"production without authn":            func(c *service.Config) { c.Authn = authn.Config{} },
		"allow_unauthenticated in production": func(c *service.Config) { c.Authn = authn.Config{}; c.Service.AllowUnauthenticated = true },
		"allow_unauthenticated beside authn":  func(c *service.Config) { c.Service.Environment = "staging"; c.Service.AllowUnauthenticated = true },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := productionConfig()
			edit(&cfg)
			if err := cfg.Validate(); err == nil {
				t.Errorf("Validate() = nil, want a refusal")
			}
			if _, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t))); err == nil {
				t.Errorf("New() = nil, want a refusal")
			}
		})
	}
}

// TestConfigRulesReachAuthentication: a method that authz.rules makes
// public needs no token, though the server authenticates; rules by
// service pattern do the same.
func TestConfigRulesReachAuthentication(t *testing.T) {
	issuer, err := devissuer.Start("stub-api")
	if err != nil {
		t.Fatal(err)
	}
	defer issuer.Close()
	for name, rules := range map[string]map[string]authz.Rule{
		"by method":  {stubserver.UnaryMethod: {Public: true}, stubserver.StreamMethod: {Authenticated: true}},
		"by service": {"/" + stubserver.Service + "/*": {Public: true}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Authn = authn.Config{Issuers: []authn.IssuerConfig{{URL: issuer.URL, Audiences: []string{"stub-api"}}}}
			cfg.Authz.Rules = rules
			r := start(t, cfg, stub())
			if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
				t.Errorf("public call without a token = %v, want OK", err)
			}
		})
	}
}

func TestMTLSNeedsTLS(t *testing.T) {
	cfg := testConfig()
	cfg.Authn = authn.Config{MTLS: true}
	_, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t)))
	if err == nil || !strings.Contains(err.Error(), "service.tls") {
		t.Errorf("New(mtls without TLS) = %v, want a refusal naming service.tls", err)
	}
}

// writePEM writes certificate and key files for c into dir.
func writePEM(t *testing.T, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	return certFile, keyFile
}

// writeFile replaces path atomically, as a secret rotation does.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestTLSFromConfig serves mTLS from the service.tls section alone, and
// picks up a rotated server certificate without a restart.
func TestTLSFromConfig(t *testing.T) {
	if err := registerEcho(); err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	dir := t.TempDir()
	first := ca.issue(t, true, "")
	certFile, keyFile := writePEM(t, dir, "server", first)
	caFile := filepath.Join(dir, "ca.crt")
	writeFile(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))

	cfg := testConfig()
	cfg.Service.TLS = service.TLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}
	cfg.Authn = authn.Config{MTLS: true}
	srv, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t)), service.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	registrars{stub(), echoService{}}.Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(t.Context()) }()
	defer func() { srv.Shutdown(t.Context()); <-done }()

	// serial dials a fresh connection and returns the serial number of the
	// certificate the server presented, and the Private method's answer.
	const id = "spiffe://loam.test/ns/trees/sa/planter"
	client := ca.issue(t, false, id)
	serial := func() (string, string, error) {
		var seen string
		creds := credentials.NewTLS(&tls.Config{
			RootCAs: ca.pool, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12,
			VerifyConnection: func(cs tls.ConnectionState) error {
				seen = cs.PeerCertificates[0].SerialNumber.String()
				return nil
			},
		})
		conn, err := service.Dial(t.Context(), srv.Addr().String(), service.WithTransportCredentials(creds))
		if err != nil {
			return "", "", err
		}
		defer conn.Close()
		got, err := callEcho(t.Context(), conn, "Private")
		return seen, got, err
	}
	leaf, _ := x509.ParseCertificate(first.Certificate[0])
	got, who, err := serial()
	if err != nil || got != leaf.SerialNumber.String() || who != id {
		t.Fatalf("first handshake: serial %s, subject %q, %v; want serial %s, subject %s", got, who, err, leaf.SerialNumber, id)
	}

	second := ca.issue(t, true, "")
	writePEM(t, dir, "server", second)
	leaf2, _ := x509.ParseCertificate(second.Certificate[0])
	deadline := time.Now().Add(5 * time.Second)
	for got != leaf2.SerialNumber.String() {
		if time.Now().After(deadline) {
			t.Fatalf("after rotating the files the server still presents serial %s, want %s", got, leaf2.SerialNumber)
		}
		time.Sleep(50 * time.Millisecond)
		if got, _, err = serial(); err != nil {
			t.Fatalf("handshake after rotation = %v", err)
		}
	}
	// A broken rotation keeps the last good certificate.
	writeFile(t, certFile, []byte("not a certificate"))
	time.Sleep(500 * time.Millisecond)
	if got, _, err := serial(); err != nil || got != leaf2.SerialNumber.String() {
		t.Errorf("after a broken rotation: serial %s, %v; want the last good %s", got, err, leaf2.SerialNumber)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]service.TLS{
		"cert without key":      {CertFile: filepath.Join(dir, "a.crt")},
		"missing files":         {CertFile: filepath.Join(dir, "a.crt"), KeyFile: filepath.Join(dir, "a.key")},
		"client CA without TLS": {ClientCAFile: filepath.Join(dir, "ca.crt")},
	} {
		cfg := testConfig()
		cfg.Service.TLS = tc
		if _, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t))); err == nil || !strings.Contains(err.Error(), "service.tls") {
			t.Errorf("New(%s) = %v, want an error naming service.tls", name, err)
		}
	}
}

// brokenProto declares a service whose event option names a key field the
// message lacks, and whose condition does not type-check.
const brokenProto = `
name: "loam/broken/v1/broken.proto"
package: "loam.broken.v1"
syntax: "proto3"
dependency: ["loam/options/v1/options.proto", "google/protobuf/wrappers.proto"]
message_type {
  name: "Planted"
  field { name: "tree_id" number: 1 type: TYPE_STRING }
  options { [loam.options.v1.event] { type: "org.example.broken.v1.planted" key_field: "planter_id" } }
}
service {
  name: "Broken"
  method {
    name: "Plant" input_type: ".google.protobuf.StringValue" output_type: ".google.protobuf.StringValue"
    options { [loam.options.v1.access] { authenticated: true condition: "request.no_such_field == 1" } }
  }
}`

var registerBroken = registerProto(brokenProto)

// TestCheckNamesBrokenContracts: what would stop Serve is reported by
// Check, in the service's own test, with the message.
func TestCheckNamesBrokenContracts(t *testing.T) {
	if err := registerBroken(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Service.AllowUnauthenticated = true
	srv, err := service.New(t.Context(), cfg, service.WithTelemetry(quietTelemetry(t)))
	if err != nil {
		t.Fatal(err)
	}
	stub().Register(srv)
	srv.RegisterService(&grpc.ServiceDesc{ServiceName: "loam.broken.v1.Broken", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{echoMethod("Plant")}}, nil)
	err = srv.Check()
	for _, want := range []string{`key_field "planter_id"`, "no_such_field"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check() = %v, want it to say %q", err, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("RegisterService after Check did not panic")
		}
	}()
	stub().Register(srv)
}

// TestWrappedStatusDoesNotLeak: an error that wraps a status reaches the
// caller as that status alone, not with the text around it.
func TestWrappedStatusDoesNotLeak(t *testing.T) {
	r := start(t, testConfig(), &stubserver.Stub{Unary: func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, fmt.Errorf("SELECT * FROM captures WHERE id = 'x' on 10.1.2.3:5432: %w", status.Error(codes.NotFound, "capture not found"))
	}})
	_, err := stubserver.Unary(t.Context(), r.conn, "x")
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "capture not found" {
		t.Errorf("call = %v, want NotFound \"capture not found\"", err)
	}
	if !strings.Contains(r.logs.String(), "10.1.2.3") {
		t.Errorf("the detail is not in the log:\n%s", r.logs.String())
	}
}

// TestNewChangesNoGlobals: building a server leaves the OpenTelemetry
// globals and slog's default alone, unless asked, and a failed New leaves
// them alone even when asked.
func TestNewChangesNoGlobals(t *testing.T) {
	tp, logger := otel.GetTracerProvider(), slog.Default()
	defer func() { otel.SetTracerProvider(tp); slog.SetDefault(logger) }()
	cfg := testConfig()
	cfg.Telemetry = telemetry.Config{Traces: telemetry.Export{Exporter: telemetry.ExporterStdout}}
	srv, err := service.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown(t.Context())
	if otel.GetTracerProvider() != tp || slog.Default() != logger {
		t.Error("New changed the OpenTelemetry globals or slog's default")
	}
	bad := cfg
	bad.Service.Faults.Rules = []service.FaultRule{{Method: "nonsense"}}
	if _, err := service.New(t.Context(), bad, service.WithGlobalTelemetry()); err == nil {
		t.Fatal("New(bad config) = nil")
	}
	if otel.GetTracerProvider() != tp || slog.Default() != logger {
		t.Error("a failed New changed the globals")
	}
	srv, err = service.New(t.Context(), cfg, service.WithGlobalTelemetry())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(t.Context())
	if otel.GetTracerProvider() != srv.Telemetry().TracerProvider() || slog.Default() != srv.Telemetry().Logger() {
		t.Error("WithGlobalTelemetry did not install the server's telemetry")
	}
}

// traceparent is a sampled W3C trace context from outside.
const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// TestUnknownMethodsDoNotDisplaceKnownOnes: thousands of made-up method
// names neither grow the table nor push a real method into _OTHER.
func TestUnknownMethodsDoNotDisplaceKnownOnes(t *testing.T) {
	cfg := testConfig()
	cfg.Service.AllowUnauthenticated = true
	cfg.Authz.Rules = map[string]authz.Rule{"/" + stubserver.Service + "/*": {Authenticated: true}}
	r := start(t, cfg, stub())
	for i := range 1100 {
		err := r.conn.Invoke(t.Context(), fmt.Sprintf("/made.up.v1.S%d/M%d", i, rand.Int()), &wrapperspb.StringValue{}, &wrapperspb.StringValue{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("call of a made-up method = %v", err)
		}
	}
	_, body := r.get(t, "/metrics")
	if !strings.Contains(body, `rpc_method="_OTHER",rpc_response_status_code="UNIMPLEMENTED"`) {
		t.Error("the calls of made-up methods are not counted as _OTHER")
	}
	r.spans.Reset()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", traceparent)
	if _, err := stubserver.Unary(ctx, r.conn, "x"); err != nil {
		t.Fatal(err)
	}
	for _, s := range waitSpans(t, r.spans, 1) {
		if s.SpanKind != trace.SpanKindServer {
			continue
		}
		if s.Name != "loam.test.v1.Stub/Unary" || s.Parent.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("server span %q with parent trace %s; want the real method under the caller's trace", s.Name, s.Parent.TraceID())
		}
	}
}

// TestPublicEndpointTrustsNothing: a public method's caller chooses
// neither the trace nor the baggage that flows on, whether telemetry
// records or not.
func TestPublicEndpointTrustsNothing(t *testing.T) {
	for _, recording := range []bool{true, false} {
		t.Run(fmt.Sprintf("recording=%v", recording), func(t *testing.T) {
			var seen trace.SpanContext
			var bag baggage.Baggage
			handler := &stubserver.Stub{Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				seen, bag = trace.SpanContextFromContext(ctx), baggage.FromContext(ctx)
				return in, nil
			}}
			var conn *grpc.ClientConn
			if recording {
				conn = start(t, testConfig(), handler).conn
			} else {
				srv, err := service.New(t.Context(), testConfig(), service.WithTelemetry(quietTelemetry(t)), service.WithoutSignals())
				if err != nil {
					t.Fatal(err)
				}
				handler.Register(srv)
				if err := srv.Listen(); err != nil {
					t.Fatal(err)
				}
				go srv.Serve(t.Context())
				t.Cleanup(func() { srv.Shutdown(context.Background()) })
				if conn, err = grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
			}
			ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", traceparent, "baggage", "tenant=acme")
			if _, err := stubserver.Unary(ctx, conn, "x"); err != nil {
				t.Fatal(err)
			}
			if seen.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
				t.Error("the handler of a public method continues the caller's trace")
			}
			if bag.Len() != 0 {
				t.Errorf("the handler of a public method carries the caller's baggage %q", bag.String())
			}
		})
	}
}
