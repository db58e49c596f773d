// Package config will load typed, layered configuration for Loam services.
//
// Status: not built yet. Nothing in this package works, and nothing else in
// Loam depends on it. It will own loading a typed configuration from defaults,
// files per environment, environment variables and flags; secrets that never
// print; the provenance of every value; environment diffs; and hot reload.
package config
