package authn_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authn/internal/authntest"
)

const interval = time.Minute

// verifyOK fails the test unless Verify accepts tok.
func verifyOK(t *testing.T, a *authn.Authenticator, tok string) {
	t.Helper()
	if _, err := a.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify() = %v, want success", err)
	}
}

func wantHits(t *testing.T, iss *authntest.Issuer, want int64) {
	t.Helper()
	if got := iss.JWKSHits.Load(); got != want {
		t.Fatalf("JWKS fetches = %d, want %d", got, want)
	}
}

// warmed starts an issuer publishing keys and an Authenticator with a
// settable clock that has already fetched the key set once.
func warmed(t *testing.T, keys ...*authntest.Key) (*authntest.Issuer, *clock, *authn.Authenticator) {
	t.Helper()
	iss := startIssuer(t, keys...)
	clk := newClock()
	a := newAuthn(t, iss, nil, authn.WithClock(clk.Now))
	verifyOK(t, a, iss.Sign(iss.Claims(nil)))
	return iss, clk, a
}

func TestKeyRotation(t *testing.T) {
	k1, k2 := authntest.NewKey("rsa-1", "RS256"), authntest.NewKey("rsa-2", "RS256")
	iss, clk, a := warmed(t, k1)
	wantHits(t, iss, 1)

	iss.SetKeys(k1, k2)
	rotated := authntest.SignWith(k2, nil, iss.Claims(map[string]any{"sub": "bob"}))
	if _, err := a.Verify(context.Background(), rotated); !errors.Is(err, authn.ErrUnknownKey) {
		t.Fatalf("Verify(new kid, within interval) = %v, want ErrUnknownKey", err)
	}
	wantHits(t, iss, 1)

	clk.Advance(interval)
	verifyOK(t, a, rotated)
	wantHits(t, iss, 2)
	verifyOK(t, a, authntest.SignWith(k2, nil, iss.Claims(map[string]any{"sub": "carol"})))
	wantHits(t, iss, 2)
}

func TestJWKSDown(t *testing.T) {
	iss, clk, a := warmed(t)

	iss.SetDown(true)
	clk.Advance(interval)
	// A known key keeps working, with a token the cache has not seen.
	verifyOK(t, a, iss.Sign(iss.Claims(map[string]any{"sub": "bob"})))

	unknown := authntest.SignWith(authntest.NewKey("rsa-9", "RS256"), nil, iss.Claims(nil))
	if _, err := a.Verify(context.Background(), unknown); !errors.Is(err, authn.ErrUnavailable) {
		t.Fatalf("Verify(unknown kid, JWKS down) = %v, want ErrUnavailable", err)
	}
	hits := iss.JWKSHits.Load()
	// Within the interval, unknown keys fail fast, without a request.
	for range 100 {
		if _, err := a.Verify(context.Background(), unknown); !errors.Is(err, authn.ErrUnavailable) {
			t.Fatalf("Verify(unknown kid, JWKS down, again) = %v, want ErrUnavailable", err)
		}
	}
	wantHits(t, iss, hits)
	verifyOK(t, a, iss.Sign(iss.Claims(map[string]any{"sub": "carol"})))
}

// TestUnknownKidFlood: forged tokens with random kids cost at most one JWKS
// fetch per interval, also when they arrive concurrently.
func TestUnknownKidFlood(t *testing.T) {
	iss, clk, a := warmed(t)
	claims := iss.Claims(nil)

	flood := func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 10_000 / 8 {
					kid := make([]byte, 8)
					_, _ = rand.Read(kid)
					tok := authntest.Raw(map[string]any{"alg": "RS256", "kid": hex.EncodeToString(kid)}, claims, make([]byte, 256))
					if _, err := a.Verify(context.Background(), tok); !errors.Is(err, authn.ErrUnknownKey) {
						t.Errorf("Verify(random kid) = %v, want ErrUnknownKey", err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	flood()
	wantHits(t, iss, 1)
	clk.Advance(interval)
	flood()
	wantHits(t, iss, 2)
}

// TestConcurrentUnknownKidShareOneFetch: callers that meet an unknown kid
// while a fetch is in flight wait for it instead of failing or fetching.
func TestConcurrentUnknownKidShareOneFetch(t *testing.T) {
	k1, k2 := authntest.NewKey("rsa-1", "RS256"), authntest.NewKey("rsa-2", "RS256")
	iss, clk, a := warmed(t, k1)

	iss.SetKeys(k1, k2)
	clk.Advance(interval)
	iss.Hold()
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		tok := authntest.SignWith(k2, nil, iss.Claims(map[string]any{"sub": "u" + itoa(int64(i))}))
		go func() {
			_, err := a.Verify(context.Background(), tok)
			errs <- err
		}()
	}
	waitFor(t, func() bool { return iss.JWKSHits.Load() == 2 })
	time.Sleep(20 * time.Millisecond) // let the others reach the wait
	iss.Release()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Verify() = %v, want success", err)
		}
	}
	wantHits(t, iss, 2)
}

func TestKeyFetchHonoursContext(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, nil)
	iss.Hold()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	tok := iss.Sign(iss.Claims(nil))
	go func() {
		_, err := a.Verify(ctx, tok)
		done <- err
	}()
	waitFor(t, func() bool { return iss.JWKSHits.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify(canceled) = %v, want context.Canceled", err)
	}
	// The fetch goes on for others: once it answers, the key is known.
	iss.Release()
	waitFor(t, func() bool { _, err := a.Verify(context.Background(), tok); return err == nil })
	wantHits(t, iss, 1)
}

// TestStartWhileIssuerDown: New does not need the issuer; verification
// starts working once it is back and the interval has passed.
func TestStartWhileIssuerDown(t *testing.T) {
	iss := startIssuer(t)
	iss.SetDown(true)
	clk := newClock()
	a := newAuthn(t, iss, nil, authn.WithClock(clk.Now))
	tok := iss.Sign(iss.Claims(nil))
	if _, err := a.Verify(context.Background(), tok); !errors.Is(err, authn.ErrUnavailable) {
		t.Fatalf("Verify(issuer down) = %v, want ErrUnavailable", err)
	}
	if err := a.Ready(context.Background()); !errors.Is(err, authn.ErrUnavailable) {
		t.Fatalf("Ready(issuer down, within interval) = %v, want ErrUnavailable", err)
	}
	iss.SetDown(false)
	clk.Advance(interval)
	if err := a.Ready(context.Background()); err != nil {
		t.Fatalf("Ready(issuer up) = %v, want nil", err)
	}
	verifyOK(t, a, tok)
	if got := iss.DiscoveryHits.Load(); got != 2 {
		t.Errorf("discovery fetches = %d, want 2", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRemovedKeyStopsVerifying: once the key set is older than
// JWKSMaxAge, it is refetched in the background, and a key the issuer has
// removed stops verifying new tokens.
func TestRemovedKeyStopsVerifying(t *testing.T) {
	k1, k2 := authntest.NewKey("rsa-1", "RS256"), authntest.NewKey("rsa-2", "RS256")
	iss, clk, a := warmed(t, k1, k2)
	token := func(k *authntest.Key, sub string) string {
		return authntest.SignWith(k, nil, iss.Claims(map[string]any{"sub": sub, "exp": time.Now().Add(3 * time.Hour).Unix()}))
	}
	verifyOK(t, a, token(k2, "before-removal"))

	iss.SetKeys(k1) // k2 retired
	verifyOK(t, a, token(k2, "within-max-age"))
	wantHits(t, iss, 1)

	clk.Advance(authn.DefaultJWKSMaxAge + time.Second)
	// The call that finds the set old still uses it, and starts a refetch.
	verifyOK(t, a, token(k2, "starts-refetch"))
	deadline := time.Now().Add(2 * time.Second)
	for iss.JWKSHits.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	wantHits(t, iss, 2)
	// Let the refetch land: new tokens (never cached) signed with k2 verify
	// until it does.
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := a.Verify(context.Background(), token(k2, "waiting-"+strconv.Itoa(i))); errors.Is(err, authn.ErrUnknownKey) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := a.Verify(context.Background(), token(k2, "retired")); !errors.Is(err, authn.ErrUnknownKey) {
		t.Errorf("Verify(removed key, after max age) = %v, want ErrUnknownKey", err)
	}
	verifyOK(t, a, token(k1, "current-key"))
}
