// Package loamproto holds the .proto files of Loam's own contracts, so
// that tools can hand them to services that build against them without a
// schema registry: `loam proto export` writes them into a service's tree.
// The Go code generated from them lives in the packages beside each file
// (such as proto/loam/options/v1); services import it rather than
// generate their own.
package loamproto

import "embed"

// Files holds Loam's .proto files at their import paths, such as
// "loam/options/v1/options.proto".
//
//go:embed loam/options/v1/options.proto
var Files embed.FS
