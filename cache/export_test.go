package cache

// RedisKey exposes the Redis key of k, so tests can poison or inspect it.
func RedisKey[K Key, V any](c *Cache[K, V], k K) string { return c.redisKey(k) }

// DropLocal removes k from the in-process tier only, so benchmarks and
// tests can make the next read go to Redis.
func DropLocal[K Key, V any](c *Cache[K, V], k K) { c.local.Invalidate(k) }

// Available reports whether s's breaker lets calls through to Redis,
// without making a call (as Check does).
func Available(s *Store) bool { return s.tier != nil && s.tier.Available() }
