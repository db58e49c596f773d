// Package cache will give Loam services a typed two-tier cache.
//
// Status: not built yet. Nothing in this package works, and nothing else in
// Loam depends on it. It will own a typed cache with an in-process tier (otter)
// in front of a shared Redis tier (rueidis), with the same portable-type and
// conformance-suite design as the events package.
package cache
