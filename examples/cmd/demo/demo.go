package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loamhq/loam/examples/internal/captures"
	"github.com/loamhq/loam/examples/internal/impact"
	capturesv1 "github.com/loamhq/loam/examples/proto/captures/v1"
	impactv1 "github.com/loamhq/loam/examples/proto/impact/v1"
	"github.com/loamhq/loam/loamtest"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

// persona is a caller of the scenario.
type persona struct {
	name    string // as printed
	subject string // the token's sub; empty for an anonymous caller
	roles   []string
	token   string
	// impactToken is the persona's token for the impact service's
	// audience.
	impactToken string
	conn        *grpc.ClientConn
	// impactConn reaches the impact service, with a token for its
	// audience.
	impactConn *grpc.ClientConn
}

// step is one call of the scenario and the decision expected of it.
type step struct {
	who    *persona
	what   string
	exempt bool // a health check: neither authorized nor traced
	call   func(ctx context.Context, c capturesv1.CaptureServiceClient) (string, error)
	// impact, when set, is called instead of call, on the impact service.
	impact func(ctx context.Context, c impactv1.ImpactServiceClient) (string, error)
	want   codes.Code
}

// result is what happened in one step.
type result struct {
	Who, What string
	Want, Got codes.Code
	Detail    string // the reply, or the error's message
	Why       string // the decision and its reason, from the server's span
	TraceID   string
}

// env is a running demo: issuer, services, telemetry, callers.
type env struct {
	issuer *loamtest.Issuer
	srv    *service.Server
	impact *service.Server
	spans  *tracetest.InMemoryExporter
	tel    *telemetry.Telemetry
	people map[string]*persona
	// done and impactDone receive what Serve of the captures and of the
	// impact server returned.
	done, impactDone chan error
}

// start starts the issuer and the captures service, and connects the
// personas. logs receives the service's own log.
func start(ctx context.Context, logs io.Writer) (*env, error) {
	issuer, err := loamtest.StartIssuer(captures.Audience)
	if err != nil {
		return nil, err
	}
	e := &env{issuer: issuer, spans: tracetest.NewInMemoryExporter(), done: make(chan error, 1), impactDone: make(chan error, 1)}
	e.tel, err = telemetry.New(ctx, telemetry.Config{Prometheus: true},
		telemetry.WithService("captures", "dev", "development"),
		telemetry.WithSpanExporter(e.spans), telemetry.WithLogOutput(logs))
	if err != nil {
		issuer.Close()
		return nil, err
	}
	e.srv, err = captures.NewServer(ctx, captures.LocalConfig(issuer.URL()), service.WithTelemetry(e.tel), service.WithoutSignals())
	if err == nil {
		err = e.srv.Listen()
	}
	if err != nil {
		issuer.Close()
		return nil, err
	}
	go func() { e.done <- e.srv.Serve(ctx) }()

	// The impact service is a server of its own, on its own port, but its
	// consumer subscribes on the captures server's in-memory bus: one
	// process, one bus, so CaptureCreated flows from one to the other
	// with no broker. Apart, each would name the same NATS in `events`.
	e.impact, err = service.New(ctx, impact.LocalConfig(issuer.URL()).Config, service.WithTelemetry(e.tel), service.WithoutSignals())
	if err == nil {
		_, err = impact.RegisterOn(ctx, e.impact, e.srv.Bus(), e.impact.Cache(), impact.NewMemoryStore())
	}
	if err == nil {
		err = e.impact.Listen()
	}
	if err != nil {
		e.close()
		return nil, err
	}
	go func() { e.impactDone <- e.impact.Serve(ctx) }()

	e.people = map[string]*persona{
		"anonymous": {name: "anonymous"},
		"alice":     {name: "alice (planter)", subject: "alice", roles: []string{"planter"}},
		"bob":       {name: "bob (planter)", subject: "bob", roles: []string{"planter"}},
		"carol":     {name: "carol (admin)", subject: "carol", roles: []string{"admin"}},
		"mallory":   {name: "mallory (expired)", subject: "mallory", roles: []string{"admin"}},
	}
	for key, p := range e.people {
		opts := []service.DialOption{service.WithClientTelemetry(e.tel)}
		if p.subject != "" {
			mint := []loamtest.TokenOption{loamtest.Roles(p.roles...)}
			if key == "mallory" {
				mint = append(mint, loamtest.Expired())
			}
			if p.token, err = issuer.Mint(p.subject, mint...); err != nil {
				e.close()
				return nil, err
			}
			opts = append(opts, service.WithPerRPCCredentials(bearer(p.token)))
		}
		if p.conn, err = service.Dial(ctx, e.srv.Addr().String(), opts...); err != nil {
			e.close()
			return nil, err
		}
		iopts := []service.DialOption{service.WithClientTelemetry(e.tel)}
		if p.subject != "" {
			mint := []loamtest.TokenOption{loamtest.Roles(p.roles...), loamtest.ForAudience(impact.Audience)}
			if key == "mallory" {
				mint = append(mint, loamtest.Expired())
			}
			if p.impactToken, err = issuer.Mint(p.subject, mint...); err != nil {
				e.close()
				return nil, err
			}
			iopts = append(iopts, service.WithPerRPCCredentials(bearer(p.impactToken)))
		}
		if p.impactConn, err = service.Dial(ctx, e.impact.Addr().String(), iopts...); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

// close stops everything start started.
func (e *env) close() {
	for _, p := range e.people {
		if p.conn != nil {
			p.conn.Close()
		}
		if p.impactConn != nil {
			p.impactConn.Close()
		}
	}
	if e.impact != nil {
		e.impact.Shutdown(context.Background())
	}
	e.srv.Shutdown(context.Background())
	e.issuer.Close()
	e.tel.Shutdown(context.Background())
}

// scenario is the story the demo plays.
func (e *env) scenario() []step {
	p := e.people
	var aliceCapture, bobCapture string
	captured := timestamppb.New(time.Now().Add(-time.Hour).Truncate(time.Second))
	create := func(planter string, id *string) func(context.Context, capturesv1.CaptureServiceClient) (string, error) {
		return func(ctx context.Context, c capturesv1.CaptureServiceClient) (string, error) {
			resp, err := c.CreateCapture(ctx, &capturesv1.CreateCaptureRequest{
				PlanterId:   planter,
				Species:     "Quercus robur",
				Location:    &capturesv1.Location{Latitude: 52.37, Longitude: 4.89},
				PhotoUrl:    "https://photos.example.org/" + planter + ".jpg",
				CaptureTime: captured,
				RequestId:   planter + "-oak-1", // a retry of this call records nothing more
			})
			if err != nil {
				return "", err
			}
			if id == nil {
				return "created " + resp.GetCapture().GetId(), nil
			}
			if *id == resp.GetCapture().GetId() {
				return "the same " + *id + ", recorded and announced once", nil
			}
			*id = resp.GetCapture().GetId()
			return "created " + *id, nil
		}
	}
	list := func(planter string) func(context.Context, capturesv1.CaptureServiceClient) (string, error) {
		return func(ctx context.Context, c capturesv1.CaptureServiceClient) (string, error) {
			resp, err := c.ListCaptures(ctx, &capturesv1.ListCapturesRequest{PlanterId: planter})
			if err != nil {
				return "", err
			}
			planters := map[string]int{}
			for _, cp := range resp.GetCaptures() {
				planters[cp.GetPlanterId()]++
			}
			return fmt.Sprintf("%d captures %v", len(resp.GetCaptures()), planters), nil
		}
	}
	get := func(id *string) func(context.Context, capturesv1.CaptureServiceClient) (string, error) {
		return func(ctx context.Context, c capturesv1.CaptureServiceClient) (string, error) {
			resp, err := c.GetCapture(ctx, &capturesv1.GetCaptureRequest{Id: *id})
			if err != nil {
				return "", err
			}
			return "read " + resp.GetCapture().GetId() + " of " + resp.GetCapture().GetPlanterId(), nil
		}
	}
	// planterImpact reads a planter's impact. Events are delivered
	// asynchronously, so it reads again, for up to two seconds, until the
	// captures created earlier in the scenario show.
	planterImpact := func(planter string, want int64) func(context.Context, impactv1.ImpactServiceClient) (string, error) {
		return func(ctx context.Context, c impactv1.ImpactServiceClient) (string, error) {
			deadline := time.Now().Add(2 * time.Second)
			for {
				resp, err := c.GetPlanterImpact(ctx, &impactv1.GetPlanterImpactRequest{PlanterId: planter})
				if err != nil {
					return "", err
				}
				n := resp.GetImpact().GetCaptures()
				if n >= want || time.Now().After(deadline) {
					return fmt.Sprintf("%s: %d captures, counted from CaptureCreated", planter, n), nil
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return []step{
		{who: p["anonymous"], what: "health check", exempt: true, want: codes.OK, call: func(ctx context.Context, _ capturesv1.CaptureServiceClient) (string, error) {
			resp, err := healthpb.NewHealthClient(p["anonymous"].conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "captures.v1.CaptureService"})
			return resp.GetStatus().String(), err
		}},
		{who: p["anonymous"], what: "ListCaptures", want: codes.Unauthenticated, call: list("")},
		{who: p["alice"], what: "CreateCapture for alice", want: codes.OK, call: create("alice", &aliceCapture)},
		{who: p["alice"], what: "CreateCapture for alice, retried", want: codes.OK, call: create("alice", &aliceCapture)},
		{who: p["alice"], what: "CreateCapture for bob", want: codes.PermissionDenied, call: create("bob", nil)},
		{who: p["bob"], what: "CreateCapture for bob", want: codes.OK, call: create("bob", &bobCapture)},
		{who: p["alice"], what: "ListCaptures", want: codes.OK, call: list("")},
		{who: p["alice"], what: "GetCapture of bob's", want: codes.PermissionDenied, call: get(&bobCapture)},
		{who: p["alice"], what: "GetCapture of her own", want: codes.OK, call: get(&aliceCapture)},
		{who: p["carol"], what: "ListCaptures of everyone", want: codes.OK, call: list("")},
		{who: p["carol"], what: "CreateCapture for carol", want: codes.PermissionDenied, call: create("carol", nil)},
		{who: p["mallory"], what: "ListCaptures with an expired token", want: codes.Unauthenticated, call: list("")},
		{who: p["carol"], what: "impact: GetPlanterImpact of alice", want: codes.OK, impact: planterImpact("alice", 1)},
		{who: p["anonymous"], what: "impact: GetPlanterImpact of alice", want: codes.Unauthenticated, impact: planterImpact("alice", 1)},
	}
}

// play runs the scenario and returns what happened at each step.
func (e *env) play(ctx context.Context) []result {
	tracer := e.tel.TracerProvider().Tracer("demo")
	var results []result
	for _, s := range e.scenario() {
		sctx, span := tracer.Start(ctx, "demo: "+s.who.name+" "+s.what)
		var detail string
		var err error
		if s.impact != nil {
			detail, err = s.impact(sctx, impactv1.NewImpactServiceClient(s.who.impactConn))
		} else {
			detail, err = s.call(sctx, capturesv1.NewCaptureServiceClient(s.who.conn))
		}
		span.End()
		r := result{Who: s.who.name, What: s.what, Want: s.want, Got: status.Code(err), Detail: detail, TraceID: span.SpanContext().TraceID().String()}
		if err != nil {
			r.Detail = status.Convert(err).Message()
		}
		r.Why = "exempt: health checks need no credentials"
		if !s.exempt {
			r.Why = e.why(span.SpanContext().TraceID())
		}
		results = append(results, r)
	}
	return results
}

// why reads the decision that the service recorded on its span of the
// call in trace id.
func (e *env) why(id trace.TraceID) string {
	deadline := time.Now().Add(time.Second)
	for {
		for _, s := range e.spans.GetSpans() {
			if s.SpanContext.TraceID() != id || s.SpanKind != trace.SpanKindServer {
				continue
			}
			attrs := map[string]string{}
			for _, kv := range s.Attributes {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			var checks []string
			for _, ev := range s.Events {
				ea := map[string]string{}
				for _, kv := range ev.Attributes {
					ea[string(kv.Key)] = kv.Value.Emit()
				}
				switch ev.Name {
				case "loam.authn.failure":
					return "authn: " + ea["loam.authn.reason"]
				case "loam.authz.check":
					checks = append(checks, fmt.Sprintf("; in handler %s %s (%s)", ea["loam.authz.decision"], ea["loam.authz.permission"], ea["loam.authz.reason"]))
				}
			}
			if attrs["loam.authz.decision"] == "" {
				return "no decision recorded"
			}
			why := "authz: " + attrs["loam.authz.decision"]
			if p := attrs["loam.authz.permission"]; p != "" {
				why += " " + p
			}
			return why + " (" + attrs["loam.authz.reason"] + ")" + strings.Join(checks, "")
		}
		if time.Now().After(deadline) {
			return "no server span recorded"
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run plays the scenario, prints the walkthrough to out, and, with serve,
// keeps serving until ctx is done.
func run(ctx context.Context, out io.Writer, logs io.Writer, serve bool) error {
	e, err := start(ctx, logs)
	if err != nil {
		return err
	}
	defer e.close()
	fmt.Fprintf(out, "Loam demo: the captures service on %s, the impact service on %s (one in-memory bus), tokens from a local OIDC issuer at %s\n\n", e.srv.Addr(), e.impact.Addr(), e.issuer.URL())
	results := e.play(ctx)
	unexpected := report(out, results)
	if unexpected > 0 {
		return fmt.Errorf("%d of %d decisions were not the expected ones", unexpected, len(results))
	}
	fmt.Fprintf(out, "\nAll %d decisions as expected. Metrics: http://%s/metrics\n", len(results), e.srv.AdminAddr())
	if !serve {
		return nil
	}
	printServeHelp(out, e)
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping")
		return nil
	case err := <-e.done:
		return fmt.Errorf("the captures server stopped: %w", err)
	case err := <-e.impactDone:
		return fmt.Errorf("the impact server stopped: %w", err)
	}
}

// report prints the results as a table and returns how many were not the
// expected decision.
func report(out io.Writer, results []result) int {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tWHO\tCALL\tRESULT\tWHY\tTRACE\tEXPECTED")
	unexpected := 0
	for i, r := range results {
		mark := "ok"
		if r.Got != r.Want {
			mark = "UNEXPECTED (want " + r.Want.String() + ")"
			unexpected++
		}
		fmt.Fprintf(tw, "%2d.\t%s\t%s\t%s: %s\t%s\t%s\t%s\n", i+1, r.Who, r.What, r.Got, r.Detail, r.Why, r.TraceID[:16], mark)
	}
	tw.Flush()
	return unexpected
}

func printServeHelp(out io.Writer, e *env) {
	fmt.Fprintf(out, "\nServing until Ctrl-C. Tokens, valid for an hour (captures-api, then impact-api):\n")
	for _, key := range []string{"alice", "bob", "carol"} {
		p := e.people[key]
		fmt.Fprintf(out, "  %s=%s\n", strings.ToUpper(key), p.token)
		fmt.Fprintf(out, "  %s_IMPACT=%s\n", strings.ToUpper(key), p.impactToken)
	}
	fmt.Fprintf(out, `
Try, with grpcurl (reflection is on in development):
  grpcurl -plaintext %[1]s list
  grpcurl -plaintext %[1]s grpc.health.v1.Health/Check
  grpcurl -plaintext -H "authorization: Bearer $ALICE" -d '{"planter_id":"alice","species":"Fagus sylvatica","location":{"latitude":52.1,"longitude":5.1},"photo_url":"https://photos.example.org/a.jpg","capture_time":"2026-01-01T10:00:00Z"}' %[1]s captures.v1.CaptureService/CreateCapture
  grpcurl -plaintext -H "authorization: Bearer $CAROL" %[1]s captures.v1.CaptureService/ListCaptures
  grpcurl -plaintext -H "authorization: Bearer $ALICE_IMPACT" -d '{"planter_id":"alice"}' %[2]s impact.v1.ImpactService/GetPlanterImpact
  grpcurl -plaintext -H "authorization: Bearer $CAROL_IMPACT" -d '{"limit":5}' %[2]s impact.v1.ImpactService/ListTopPlanters
  curl http://%[3]s/metrics    # captures
  curl http://%[4]s/metrics    # impact
`, e.srv.Addr(), e.impact.Addr(), e.srv.AdminAddr(), e.impact.AdminAddr())
}

// bearer is a static bearer token as per-RPC credentials. It allows
// plaintext because the demo runs on loopback; real services use TLS or
// a mesh, and authn.NewClientCredentials.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
