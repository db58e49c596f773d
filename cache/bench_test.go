package cache_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/loamhq/loam/cache"
	"github.com/loamhq/loam/internal/testenv"
)

const benchKeys = 1024

func benchKeyNames() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	return keys
}

// BenchmarkLocalHit compares a hit of the in-process tier with the same
// read of a raw otter cache configured alike (size bound, expiry on
// write): Get against GetIfPresent, and GetOrLoad against otter's Get with
// a loader. Goal: at least 0.8x otter's throughput, no allocations.
func BenchmarkLocalHit(b *testing.B) {
	keys := benchKeyNames()
	raw := otter.Must(&otter.Options[string, string]{
		MaximumSize:      10_000,
		ExpiryCalculator: otter.ExpiryWriting[string, string](time.Hour),
	})
	defer raw.StopAllGoroutines()
	rawLoader := otter.LoaderFunc[string, string](func(context.Context, string) (string, error) { return "v", nil })
	c := mustNew[string, string](b, localStore(b, cache.Config{TTL: time.Hour}), "bench")
	loader := func(context.Context, string) (string, error) { return "v", nil }
	ctx := context.Background()
	for _, k := range keys {
		raw.Set(k, "v")
		if err := c.Set(ctx, k, "v"); err != nil {
			b.Fatal(err)
		}
	}
	run := func(name string, read func(k string)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				read(keys[i%benchKeys])
				i++
			}
		})
		b.Run(name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					read(keys[i%benchKeys])
					i++
				}
			})
		})
	}
	run("otter-GetIfPresent", func(k string) {
		if _, ok := raw.GetIfPresent(k); !ok {
			b.Fatal("miss")
		}
	})
	run("loam-Get", func(k string) {
		if _, err := c.Get(ctx, k); err != nil {
			b.Fatal(err)
		}
	})
	run("otter-Get-loader", func(k string) {
		if _, err := raw.Get(ctx, k, rawLoader); err != nil {
			b.Fatal(err)
		}
	})
	run("loam-GetOrLoad", func(k string) {
		if _, err := c.GetOrLoad(ctx, k, loader); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkRedisHit compares a hit of the shared tier (the in-process copy
// dropped before each read, so the read goes to Redis, decodes the entry
// and fills the in-process tier) with a raw rueidis GET of a value of the
// same size on the same Redis. Goal: at least 0.9x rueidis's throughput.
func BenchmarkRedisHit(b *testing.B) {
	ctx := context.Background()
	keys := benchKeyNames()
	value := make([]byte, 256)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	client := testenv.RedisClient(b)
	ns := namespace(b)
	cleanNamespace(b, ns)
	cfg := redisConfig(b, ns, "")
	cfg.TTL = time.Hour
	c := mustNew[string, []byte](b, localStore(b, cfg), "bench")
	rawKeys := make([]string, benchKeys)
	for i, k := range keys {
		rawKeys[i] = ns + ":raw:" + k
		if err := client.Do(ctx, client.B().Set().Key(rawKeys[i]).Value(string(value)).Ex(time.Hour).Build()).Error(); err != nil {
			b.Fatal(err)
		}
		if err := c.Set(ctx, k, value); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("rueidis-GET", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if v, err := client.Do(ctx, client.B().Get().Key(rawKeys[i%benchKeys]).Build()).AsBytes(); err != nil || len(v) != len(value) {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("loam-Get", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := keys[i%benchKeys]
			cache.DropLocal(c, k)
			if v, err := c.Get(ctx, k); err != nil || len(v) != len(value) {
				b.Fatal(err)
			}
			i++
		}
	})
	// 16 concurrent readers on distinct keys.
	parallel := func(name string, read func(i int) error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for i := int(next.Add(1)) * 64; pb.Next(); i++ {
					if err := read(i % benchKeys); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	parallel("rueidis-GET-parallel", func(i int) error {
		return client.Do(ctx, client.B().Get().Key(rawKeys[i]).Build()).Error()
	})
	parallel("loam-Get-parallel", func(i int) error {
		cache.DropLocal(c, keys[i])
		_, err := c.Get(ctx, keys[i])
		return err
	})
}

// BenchmarkInvalidation measures how long a Set in one process takes to
// reach the in-process tier of another: from the return of a.Set until
// b.Get, polling without pause, returns the new value (b's copy dropped by
// the invalidation, then read from Redis). Reported as
// propagation-µs/op (mean) and max-propagation-µs.
func BenchmarkInvalidation(b *testing.B) {
	ctx := context.Background()
	ns := namespace(b)
	cleanNamespace(b, ns)
	cfg := redisConfig(b, ns, "")
	cfg.TTL = time.Hour
	a := mustNew[string, int](b, localStore(b, cfg), "inval")
	o := mustNew[string, int](b, localStore(b, cfg), "inval")
	if err := a.Set(ctx, "k", -1); err != nil {
		b.Fatal(err)
	}
	var total, worst time.Duration
	n := 0
	for b.Loop() {
		if err := a.Set(ctx, "k", n); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for {
			if v, err := o.Get(ctx, "k"); err == nil && v == n {
				break
			}
			if time.Since(start) > 5*time.Second {
				b.Fatalf("Set %d never reached the other process", n)
			}
		}
		d := time.Since(start)
		total += d
		worst = max(worst, d)
		n++
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n), "propagation-µs/op")
	b.ReportMetric(float64(worst.Microseconds()), "max-propagation-µs")
}
