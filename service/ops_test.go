package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

// TestReadyzWithAHangingCheck: a check that ignores its context neither
// holds /readyz past the timeout nor piles up a goroutine per request.
func TestReadyzWithAHangingCheck(t *testing.T) {
	defer service.SetReadinessTimeout(200 * time.Millisecond)()
	r := start(t, testConfig(), stub())
	release := make(chan struct{})
	defer close(release)
	var runs sync.WaitGroup
	var started int
	var mu sync.Mutex
	r.srv.AddReadinessCheck("hung", func(context.Context) error {
		mu.Lock()
		started++
		mu.Unlock()
		<-release
		return nil
	})
	before := runtime.NumGoroutine()
	for range 20 {
		runs.Go(func() {
			begin := time.Now()
			code, body := r.get(t, "/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "did not answer") {
				t.Errorf("/readyz with a hung check = %d %s, want 503 saying it did not answer", code, body)
			}
			if took := time.Since(begin); took > 2*time.Second {
				t.Errorf("/readyz took %v with a 200ms readiness timeout", took)
			}
		})
	}
	runs.Wait()
	mu.Lock()
	defer mu.Unlock()
	if started != 1 {
		t.Errorf("the hung check was started %d times, want once", started)
	}
	// The requests' own connections close; what stays is the one run of
	// the hung check.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Second)
	after := runtime.NumGoroutine()
	for after > before+3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		after = runtime.NumGoroutine()
	}
	if after > before+3 {
		t.Errorf("goroutines grew from %d to %d over 20 requests, want only the hung check's", before, after)
	}
}

// TestAdminConnectionsClosedAtShutdown: an idle keep-alive connection to
// the admin server does not outlive the server.
func TestAdminConnectionsClosedAtShutdown(t *testing.T) {
	r := start(t, testConfig(), stub())
	conn, err := net.Dial("tcp", r.srv.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
	buf := make([]byte, 512)
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.srv.Shutdown(context.Background()) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return with an idle admin connection open")
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(buf); err == nil {
		t.Error("the admin connection is still open after Shutdown")
	}
}

// metric returns the value of a Prometheus sample whose line starts with
// prefix, from the admin server's /metrics.
func (r *running) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	_, body := r.get(t, "/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			return v
		}
	}
	return 0
}

func TestHeaderListLimit(t *testing.T) {
	r := start(t, testConfig(), stub())
	for _, size := range []int{100 << 10, 4 << 20} {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "x-big", strings.Repeat("a", size))
		if _, err := stubserver.Unary(ctx, r.conn, "x"); err == nil {
			t.Errorf("call with a %d-byte header succeeded, want it refused", size)
		}
	}
	if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
		t.Errorf("call after refused headers = %v, want OK", err)
	}
}

// blockingStub's handler waits on release, or its context, for "block".
func blockingStub(entered chan<- struct{}, release <-chan struct{}) *stubserver.Stub {
	return &stubserver.Stub{Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "block" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return in, nil
	}}
}

func TestConcurrencyLimitSheds(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Limits.MaxConcurrentCalls = 2
	entered, release := make(chan struct{}, 2), make(chan struct{})
	r := start(t, cfg, blockingStub(entered, release))
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { stubserver.Unary(context.Background(), r.conn, "block") })
		<-entered
	}
	_, err := stubserver.Unary(t.Context(), r.conn, "x")
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third concurrent call = %v, want ResourceExhausted", err)
	}
	close(release)
	wg.Wait()
	if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
		t.Errorf("call after the load went = %v, want OK", err)
	}
	if n := r.metric(t, `loam_server_rejected_calls_total{otel_scope_name="github.com/loamhq/loam/service",otel_scope_schema_url="",otel_scope_version="",reason="concurrency_limit",rpc_method="/loam.test.v1.Stub/Unary"}`); n != 1 {
		t.Errorf("loam.server.rejected_calls{reason=concurrency_limit} = %v, want 1", n)
	}
}

// trustSubjectRoles authenticates the subject and the roles named by the
// x-subject and x-roles headers.
var trustSubjectRoles = service.InterceptorFuncs(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if v := metadata.ValueFromIncomingContext(ctx, "x-subject"); len(v) > 0 {
		ctx = authn.NewContext(ctx, authn.NewPrincipal(authn.Identity{Subject: v[0], Issuer: "test", Roles: metadata.ValueFromIncomingContext(ctx, "x-roles")}))
	}
	return h(ctx, req)
}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, ss)
})

func TestRateLimitPerPrincipal(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Limits.RateLimits = []service.RateLimit{{Method: "/" + stubserver.Service + "/*", PerSecond: 0.1, Burst: 2}}
	r := start(t, cfg, stub(), service.WithAuthentication(trustSubjectRoles))
	call := func(who string) error {
		_, err := stubserver.Unary(metadata.AppendToOutgoingContext(t.Context(), "x-subject", who), r.conn, "x")
		return err
	}
	for i := range 2 {
		if err := call("alice"); err != nil {
			t.Fatalf("alice's call %d within the burst = %v", i+1, err)
		}
	}
	if err := call("alice"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("alice's third call = %v, want ResourceExhausted", err)
	}
	if err := call("bob"); err != nil {
		t.Errorf("bob's first call = %v, want OK: buckets are per principal", err)
	}
	if n := r.metric(t, `loam_server_rejected_calls_total{otel_scope_name="github.com/loamhq/loam/service",otel_scope_schema_url="",otel_scope_version="",reason="rate_limit",rpc_method="/loam.test.v1.Stub/Unary"}`); n != 1 {
		t.Errorf("loam.server.rejected_calls{reason=rate_limit} = %v, want 1", n)
	}
}

func TestDefaultCallTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Limits.DefaultCallTimeout = 100 * time.Millisecond
	entered, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	r := start(t, cfg, blockingStub(entered, release))
	// A client without a deadline: the raw connection, not Dial's default.
	conn, err := grpc.NewClient(r.srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	begin := time.Now()
	_, err = stubserver.Unary(context.Background(), conn, "block")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("call without a deadline on a stuck handler = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("call took %v with a 100ms default deadline", took)
	}
}

// garbage is a client codec that sends bytes that are not a protobuf
// message.
type garbage struct{ encoding.CodecV2 }

func (garbage) Marshal(any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer{0xff, 0xff, 0xff, 0xff}}, nil
}
func (garbage) Name() string { return "proto" }

func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	r := start(t, testConfig(), &stubserver.Stub{Unary: echo, Stream: func(ss grpc.ServerStream) error {
		in := new(wrapperspb.StringValue)
		if err := ss.RecvMsg(in); err != nil {
			return err
		}
		return ss.SendMsg(in)
	}})
	codec := garbage{encoding.GetCodecV2("proto")}
	err := r.conn.Invoke(t.Context(), stubserver.UnaryMethod, wrapperspb.String("x"), new(wrapperspb.StringValue), grpc.ForceCodecV2(codec))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("call with malformed bytes = %v, want InvalidArgument", err)
	}
	st, err := r.conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, stubserver.StreamMethod, grpc.ForceCodecV2(codec))
	if err != nil {
		t.Fatal(err)
	}
	st.SendMsg(wrapperspb.String("x"))
	st.CloseSend()
	if err := st.RecvMsg(new(wrapperspb.StringValue)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("stream with malformed bytes = %v, want InvalidArgument", err)
	}
	if _, err := stubserver.Unary(t.Context(), r.conn, "x"); err != nil {
		t.Errorf("a good call after = %v", err)
	}
	if n := r.metric(t, `loam_server_rejected_calls_total{otel_scope_name="github.com/loamhq/loam/service",otel_scope_schema_url="",otel_scope_version="",reason="malformed_request",rpc_method="/loam.test.v1.Stub/Unary"}`); n != 1 {
		t.Errorf("loam.server.rejected_calls{reason=malformed_request, Unary} = %v, want 1", n)
	}
}

func TestConnectionCap(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Limits.MaxConnections = 1
	r := start(t, cfg, stub()) // start's own client holds the one connection
	other, err := grpc.NewClient(r.srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := stubserver.Unary(ctx, other, "x", grpc.WaitForReady(true)); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("call on a second connection past the cap = %v, want it to wait (DeadlineExceeded)", err)
	}
	r.conn.Close()
	if _, err := stubserver.Unary(t.Context(), other, "x", grpc.WaitForReady(true)); err != nil {
		t.Errorf("call once the first connection closed = %v, want OK", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Limits.HandshakeTimeout = 200 * time.Millisecond
	r := start(t, cfg, stub())
	conn, err := net.Dial("tcp", r.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	begin := time.Now()
	_, err = io.ReadAll(conn) // the server's preface, then the close
	if err != nil || time.Since(begin) > 3*time.Second {
		t.Errorf("a connection that never sends its preface stayed %v (%v), want it closed after 200ms", time.Since(begin), err)
	}
}

// connCounter counts the connections a client opens.
type connCounter struct{ n atomic.Int32 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.n.Add(1)
	}
}

func TestMaxConnectionAge(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Limits.MaxConnectionAge = 200 * time.Millisecond
	cfg.Service.Limits.MaxConnectionAgeGrace = 100 * time.Millisecond
	r := start(t, cfg, stub())
	var conns connCounter
	conn, err := grpc.NewClient(r.srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(&conns))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for conns.n.Load() < 2 {
		if _, err := stubserver.Unary(t.Context(), conn, "x", grpc.WaitForReady(true)); err != nil {
			t.Fatalf("call across connection ageing = %v, want OK", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client still has its first connection after 5s with a 200ms max age")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFaultHeaderDelayIsCapped(t *testing.T) {
	cfg := testConfig()
	cfg.Service.Faults = service.Faults{Enabled: true, FromHeaders: true, MaxHeaderDelay: 100 * time.Millisecond}
	r := start(t, cfg, stub())
	ctx := metadata.AppendToOutgoingContext(t.Context(), service.FaultDelayHeader, "1h")
	begin := time.Now()
	if _, err := stubserver.Unary(ctx, r.conn, "x"); err != nil {
		t.Fatalf("call asking for an hour's delay = %v", err)
	}
	if took := time.Since(begin); took < 100*time.Millisecond || took > 3*time.Second {
		t.Errorf("call asking for an hour's delay took %v, want the 100ms cap", took)
	}
}
