// Package contracts holds the tests that prove the guards around Loam's
// protobuf contracts are real: that `buf breaking`, configured as in
// buf.yaml, rejects breaking edits to a contract; that `buf lint` and `buf
// breaking` run Loam's own rules (cmd/buf-plugin-loam) and fail on a
// contract that breaks each of them; and that the freshness check of
// scripts/generate rejects generated code edited by hand, stale or
// missing. They run buf from the tools module on temporary copies of the
// repository's contracts; the repository itself is never modified.
//
// The package has no code of its own.
package contracts
