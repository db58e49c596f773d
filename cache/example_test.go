package cache_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loamhq/loam/cache"
)

// A Store without Redis is an in-process cache: the local default.
func ExampleNew() {
	ctx := context.Background()
	store, err := cache.Open(ctx, cache.Config{})
	if err != nil {
		panic(err)
	}
	defer store.Close()

	users, err := cache.New[int, string](store, "users", cache.WithTTL(time.Minute))
	if err != nil {
		panic(err)
	}
	_ = users.Set(ctx, 1, "ana")
	name, err := users.Get(ctx, 1)
	fmt.Println(name, err)
	_, err = users.Get(ctx, 2)
	fmt.Println(errors.Is(err, cache.ErrMiss))
	// Output:
	// ana <nil>
	// true
}

// GetOrLoad calls the loader once per key, and remembers "not found".
func ExampleCache_GetOrLoad() {
	ctx := context.Background()
	store, _ := cache.Open(ctx, cache.Config{NegativeTTL: 30 * time.Second})
	defer store.Close()
	captures, _ := cache.New[string, string](store, "captures")

	calls := 0
	load := func(ctx context.Context, id string) (string, error) {
		calls++
		if id == "missing" {
			return "", cache.ErrNotFound
		}
		return "capture " + id, nil
	}
	for range 3 {
		v, _ := captures.GetOrLoad(ctx, "c1", load)
		_, err := captures.GetOrLoad(ctx, "missing", load)
		fmt.Println(v, errors.Is(err, cache.ErrNotFound))
	}
	fmt.Println("loader calls:", calls)
	// Output:
	// capture c1 true
	// capture c1 true
	// capture c1 true
	// loader calls: 2
}

// Check is the readiness check; without Redis there is nothing to fail.
func ExampleStore_Check() {
	ctx := context.Background()
	store, _ := cache.Open(ctx, cache.Config{})
	defer store.Close()

	err := store.Check(ctx)
	var outage *cache.OutageError
	switch {
	case err == nil:
		fmt.Println("ready")
	case errors.As(err, &outage) && outage.Degraded():
		fmt.Println("degraded:", err)
	default:
		fmt.Println("not ready:", err)
	}
	// Output:
	// ready
}
