// Package authz will authorize every RPC of a Loam service.
//
// Status: not built yet. Nothing in this package works, and nothing else in
// Loam depends on it. It will own the per-RPC rules read from the
// loam.options.v1.access method option (deny by default), role-to-permission
// policy, CEL conditions over the request and the principal, and the decision
// log.
package authz
