// Package service will assemble a production gRPC server and client.
//
// Status: not built yet. Nothing in this package works. It will own the gRPC
// server with every Loam part wired in a documented order (recovery,
// telemetry, limits, authentication, authorization), gRPC health and
// reflection, the admin HTTP server, graceful drain, and the client
// connection that calls other services.
package service
