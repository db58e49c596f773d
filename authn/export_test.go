package authn

// WithClock replaces time.Now in tests (token times, cache, refetch interval).
var WithClock = withClock
