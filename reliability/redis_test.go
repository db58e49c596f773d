//go:build fault

package reliability_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/internal/testenv"
	"github.com/loamhq/loam/loamtest"
)

// latencies collects call durations for a percentile.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// take returns the 99th percentile, the maximum and how many took longer
// than over, and starts over.
func (l *latencies) take(over time.Duration) (p99, maxD time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(l.d)
	p99, maxD = l.d[len(l.d)*99/100], l.d[len(l.d)-1]
	n = len(l.d) - sort.Search(len(l.d), func(i int) bool { return l.d[i] > over })
	l.d = l.d[:0]
	return p99, maxD, n
}

// TestRedisOutage serves RPCs that read through the cache of a Loam
// server whose Redis is behind a proxy, while 8 callers keep calling: Redis
// is cut off, restored, slowed past the cache's Redis timeout, and restored
// again. No RPC fails: reads fall back to the process's tier and the
// loader. Recovery is the time from the restore until the cache uses Redis
// again (its readiness check passes).
func TestRedisOutage(t *testing.T) {
	proxy := testenv.NewProxy(t, testenv.Redis.HostPort(t))
	ns := "loam-reliability-" + strings.ToLower(rand.Text()[:10])
	cleanNamespace(t, ns)
	cfg := stubConfig()
	cfg.Cache = cache.Config{
		Namespace: ns,
		TTL:       time.Minute,
		// Fewer entries in the process than keys in use, so that most
		// reads need Redis: an outage shows in them.
		LocalMaxEntries: 500,
		Redis: cache.RedisConfig{
			Addresses:        []string{proxy.Addr()},
			Timeout:          100 * time.Millisecond,
			DialTimeout:      300 * time.Millisecond,
			FailureThreshold: 3,
			RetryInterval:    100 * time.Millisecond,
		},
	}
	var items *cache.Cache[string, string]
	var loads atomic.Int64
	load := func(ctx context.Context, key string) (string, error) {
		loads.Add(1)
		time.Sleep(2 * time.Millisecond) // the database behind the cache
		return "value of " + key, nil
	}
	srv := loamtest.StartServer(t, cfg, (&stubserver.Stub{Unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		v, err := items.GetOrLoad(ctx, in.GetValue(), load)
		if err != nil {
			return nil, err
		}
		return wrapperspb.String(v), nil
	}}).Register)
	var err error
	if items, err = cache.New[string, string](srv.Cache(), "items"); err != nil {
		t.Fatal(err)
	}
	conn := srv.Client(t, "")
	ctx := ctxT(t)

	var calls, failed atomic.Int64
	var first firstErr
	var lat latencies
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; ; i += 8 {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprint("item-", i%5000)
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				start := time.Now()
				got, err := stubserver.Unary(cctx, conn, key)
				lat.add(time.Since(start))
				cancel()
				calls.Add(1)
				if err == nil && got != "value of "+key {
					err = fmt.Errorf("got %q", got)
				}
				if err != nil {
					failed.Add(1)
					first.set(fmt.Errorf("%s: %w", key, err))
				}
				time.Sleep(500 * time.Microsecond)
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

	check := func() error { return srv.Cache().Check(ctx) }
	// phase runs the load for d with fault on, then restores the proxy
	// and reports the phase's row with the time until Redis is in use.
	phase := func(name string, fault func(), d time.Duration) {
		t.Helper()
		c0, f0, l0 := calls.Load(), failed.Load(), loads.Load()
		lat.take(0)
		fault()
		var outage *cache.OutageError
		if !eventually(10*time.Second, func() bool { return errors.As(check(), &outage) }) {
			t.Errorf("%s: Check() = %v, want an *OutageError", name, check())
		}
		time.Sleep(d)
		restored := time.Now()
		proxy.Restore()
		if !eventually(wait, func() bool { return check() == nil }) {
			t.Fatalf("%s: the cache did not use Redis again within %v: %v", name, wait, check())
		}
		recovery := time.Since(restored)
		time.Sleep(300 * time.Millisecond) // load after the recovery, in the same row
		p99, maxD, slow := lat.take(cfg.Cache.Redis.Timeout)
		report(t, row{scenario: "redis", fault: name,
			load: fmt.Sprintf("8 callers, 5000 keys, 500 in process; %d loader calls (fallback); RPC p99 %v, max %v; %d RPCs over the Redis timeout",
				loads.Load()-l0, p99.Round(time.Millisecond), maxD.Round(time.Millisecond), slow),
			requests: calls.Load() - c0, errors: failed.Load() - f0, lost: -1, dups: -1, recovery: recovery})
	}
	time.Sleep(500 * time.Millisecond) // warm both tiers
	phase(fmt.Sprintf("Redis cut off for %v", 2*time.Second), proxy.Cut, 2*time.Second)
	phase("Redis answers 300ms late (timeout 100ms) for 2s", func() { proxy.Latency(300 * time.Millisecond) }, 2*time.Second)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d RPCs failed across the outages; first: %v", failed.Load(), calls.Load(), first.get())
	}
	// The shared tier is in use again: a value loaded now reaches Redis
	// (under namespace:cache:version:key).
	if _, err := stubserver.Unary(ctx, conn, "after"); err != nil {
		t.Fatal(err)
	}
	client := testenv.RedisClient(t)
	if !eventually(5*time.Second, func() bool {
		n, _ := client.Do(ctx, client.B().Exists().Key(ns+":items:1:after").Build()).AsInt64()
		return n == 1
	}) {
		t.Error("a value loaded after the recovery did not reach Redis")
	}
}

// cleanNamespace deletes every key of ns from the machine's Redis when t
// ends.
func cleanNamespace(t *testing.T, ns string) {
	client := testenv.RedisClient(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var cursor uint64
		for {
			e, err := client.Do(ctx, client.B().Scan().Cursor(cursor).Match(ns+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Errorf("cleanup: scanning %s: %v", ns, err)
				return
			}
			if len(e.Elements) > 0 {
				if err := client.Do(ctx, client.B().Del().Key(e.Elements...).Build()).Error(); err != nil {
					t.Errorf("cleanup: deleting keys of %s: %v", ns, err)
					return
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
}
