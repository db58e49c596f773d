//go:build fault

package reliability_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/internal/testenv"
	"github.com/loamhq/loam/loamtest"
)

const downPhase = "JWKS endpoint down for 2s"

// hung is how long a call with a 500ms deadline may take before it counts
// as hanging past its deadline: the slack is for a busy machine.
const hung = time.Second

// bearer sends a fixed token with one call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// rogueToken is an access token of iss's shape (issuer, audience, typ
// at+jwt) signed by a key the issuer never published, under kid.
func rogueToken(t *testing.T, key *rsa.PrivateKey, kid string, iss *loamtest.Issuer) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(map[string]any{
		"iss": iss.URL(), "aud": iss.Audience(), "sub": "mallory", "client_id": "rogue",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestIdPOutage puts a proxy between a Loam server and its identity
// provider's JWKS endpoint, and while 8 callers with tokens signed by the
// provider's key (with the verified-token cache off, so that every call
// checks a signature) and 2 callers with tokens under unknown keys keep calling, cuts
// the endpoint off, then slows it to 2s an answer. Calls with the known key
// keep succeeding; calls with an unknown key fail fast, UNAVAILABLE while
// the keys cannot be fetched; no call outlives its 500ms deadline.
// Recovery is the time from the restore until the server's readiness
// stops reporting the provider degraded: a fetch of the keys succeeded.
func TestIdPOutage(t *testing.T) {
	iss := loamtest.NewIssuer(t, "reliability")
	u, err := url.Parse(iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	cfg := stubConfig()
	cfg.Authz = authz.Config{Rules: map[string]authz.Rule{"/" + stubserver.Service + "/*": {Authenticated: true}}}
	cfg.Authn = iss.AuthnConfig()
	cfg.Authn.Issuers[0].JWKSURL = "http://" + proxy.Addr() + "/keys"
	cfg.Authn.JWKSRefetchInterval = 200 * time.Millisecond
	cfg.Authn.CacheSize = -1 // every call checks its token's signature
	srv := loamtest.StartServer(t, cfg, (&stubserver.Stub{Unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return in, nil
	}}).Register)
	conn := srv.Client(t, "")
	ctx := ctxT(t)

	// Tokens signed by the issuer's key; with the token cache off, every
	// call checks its signature against the key set the server fetched.
	tokens := make([]string, 200)
	for i := range tokens {
		tokens[i] = iss.Token(t, fmt.Sprint("user-", i))
	}
	var next atomic.Int64
	rogue, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	unknown := make([]string, 50)
	for i := range unknown {
		unknown[i] = rogueToken(t, rogue, fmt.Sprint("rogue-", i), iss)
	}
	var nextUnknown atomic.Int64
	call := func(tok string) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := stubserver.Unary(cctx, conn, "x", grpc.PerRPCCredentials(bearer(tok)))
		return time.Since(start), err
	}
	// Warm the key set.
	if _, err := call(tokens[0]); err != nil {
		t.Fatalf("a call with a valid token before any fault = %v", err)
	}

	type tally struct {
		knownCalls, knownFailed, unknownCalls, unknownOther, overDeadline atomic.Int64
		unknownCodes                                                      sync.Map // code → *atomic.Int64
		knownMax, unknownMax                                              atomic.Int64
	}
	var cur atomic.Pointer[tally]
	cur.Store(new(tally))
	var first firstErr
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tl := cur.Load()
				if w < 8 { // known key
					took, err := call(tokens[next.Add(1)%int64(len(tokens))])
					tl.knownCalls.Add(1)
					if int64(took) > tl.knownMax.Load() {
						tl.knownMax.Store(int64(took))
					}
					if took > hung {
						tl.overDeadline.Add(1)
					}
					if err != nil {
						tl.knownFailed.Add(1)
						first.set(fmt.Errorf("a call with a known key: %w", err))
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				took, err := call(unknown[nextUnknown.Add(1)%int64(len(unknown))])
				tl.unknownCalls.Add(1)
				if int64(took) > tl.unknownMax.Load() {
					tl.unknownMax.Store(int64(took))
				}
				if took > hung {
					tl.overDeadline.Add(1)
				}
				code := status.Code(err)
				n, _ := tl.unknownCodes.LoadOrStore(code, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				if code == codes.OK {
					tl.unknownOther.Add(1)
					first.set(fmt.Errorf("a call with an unknown key succeeded"))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	})
	// readiness returns the server's /readyz status: "ready", or
	// "degraded" while the last fetch of the keys failed and the keys
	// fetched before it still verify.
	readiness := func() string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.AdminAddr().String()+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var body struct{ Status string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err.Error()
		}
		return body.Status
	}
	phase := func(name string, fault func(), d time.Duration) {
		t.Helper()
		tl := new(tally)
		cur.Store(tl)
		fault()
		time.Sleep(d)
		state := readiness()
		restored := time.Now()
		proxy.Restore()
		if !eventually(wait, func() bool { return readiness() == "ready" }) {
			t.Fatalf("%s: /readyz = %q %v after the restore, want ready", name, readiness(), wait)
		}
		recovery := time.Since(restored)
		note := ""
		if state == "ready" {
			note = "no outage: keys fetched, late"
		}
		cur.Store(new(tally))
		var codesSeen string
		tl.unknownCodes.Range(func(k, v any) bool {
			codesSeen += fmt.Sprintf(" %v×%d", k, v.(*atomic.Int64).Load())
			return true
		})
		report(t, row{scenario: "idp", fault: name,
			load: fmt.Sprintf("8 callers with known keys (%d calls, %d failed, slowest %v), 2 with unknown keys (%d calls:%s; slowest %v); deadline 500ms, %d calls past 1s",
				tl.knownCalls.Load(), tl.knownFailed.Load(), time.Duration(tl.knownMax.Load()).Round(time.Millisecond),
				tl.unknownCalls.Load(), codesSeen, time.Duration(tl.unknownMax.Load()).Round(time.Millisecond), tl.overDeadline.Load()),
			requests: tl.knownCalls.Load() + tl.unknownCalls.Load(), errors: tl.knownFailed.Load(), lost: -1, dups: -1, recovery: recovery, recoveryNote: note})
		if name == downPhase && state != "degraded" {
			t.Errorf("%s: /readyz = %q at the end of the outage, want degraded", name, state)
		}
		if tl.knownFailed.Load() != 0 || tl.unknownOther.Load() != 0 {
			t.Errorf("%s: %d calls with a known key failed, %d with an unknown key succeeded; first: %v",
				name, tl.knownFailed.Load(), tl.unknownOther.Load(), first.get())
		}
		if tl.overDeadline.Load() != 0 {
			t.Errorf("%s: %d calls took more than %v with a 500ms deadline", name, tl.overDeadline.Load(), hung)
		}
		if tl.knownCalls.Load() == 0 || tl.unknownCalls.Load() == 0 {
			t.Errorf("%s: %d calls with known keys, %d with unknown ones; want both", name, tl.knownCalls.Load(), tl.unknownCalls.Load())
		}
	}
	time.Sleep(300 * time.Millisecond)
	phase(downPhase, proxy.Cut, 2*time.Second)
	phase("JWKS endpoint answers 2s late for 2s", func() { proxy.Latency(2 * time.Second) }, 2*time.Second)
	close(stop)
	wg.Wait()
	if err := first.get(); err != nil {
		t.Errorf("first error: %v", err)
	}
}
