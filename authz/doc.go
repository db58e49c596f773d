// Package authz authorizes every RPC of a Loam service against the access
// rules declared next to each method in its .proto, a role policy, and CEL
// conditions. Anything not allowed is denied.
//
// An Authorizer, made by New once the application has registered its
// services, compiles the rule of every method the server serves and
// refuses to be built, so that the server refuses to start, when a method
// has no rule. Its interceptors run after authn's, which put the caller's
// *authn.Principal in the context:
//
//	az, err := authz.New(cfg.Authz, srv.GetServiceInfo())
//	an, err := authn.New(cfg.Authn, authn.WithPublicMethods(az.PublicMethods()...))
//	// chain: an's interceptors, then az's
//
// The service package does exactly this, once, when the server first
// checks its contracts, and hands the same table (Methods, PublicMethods)
// to telemetry.
//
// # Rules
//
// A method's rule is its loam.options.v1.access option, read through
// package proto/loam/options from protoregistry.GlobalFiles, where
// generated code registers every .proto linked into the binary:
//
//   - public: anybody, authenticated or not;
//   - authenticated: any principal;
//   - permission: "captures.create": a principal whose roles grant it.
//
// Methods whose .proto the team does not own, or that have no descriptor
// (a hand-written grpc.ServiceDesc), take their rule from Config.Rules by
// full method name, in the same shape, or by "/pkg.Service/*" for every
// method of a service that has no rule of its own. A Config.Rules entry that differs
// from the method's proto rule, or names no served method, is a start-up
// error: configuration never silently overrides a contract. The methods of
// grpc.health.v1.Health, grpc.reflection.v1.ServerReflection and
// grpc.reflection.v1alpha.ServerReflection are exempt (always allowed)
// unless Config.Rules names them, for instance to close reflection in
// production. A method the Authorizer does not know, such as one
// registered after New, is denied.
//
// # Role policy
//
// Config.Roles maps the role names of authn.Principal's Roles to
// permissions: exact names, wildcards over a prefix ("captures.*" grants
// "captures.create" and "captures.images.delete"), or "*" for everything.
// Roles the policy does not name grant nothing. With Config.ScopesGrant, an
// OAuth scope grants the permission of exactly the same name (for
// service-to-service callers that carry scopes rather than roles).
//
// Entries that grant nothing any rule declares (a permission no method
// names, a wildcard that matches none) and "*" are not errors: Warnings
// lists them and New and SetPolicy log them at Warn. A permission that
// only handlers check with Check is listed too, unless
// Config.HandlerPermissions names it.
//
// SetPolicy replaces the policy while the server runs (wire config.Watch to
// it). An invalid policy is refused with an error naming the bad entry, and
// the last good one stays enforced. The swap is atomic: each decision sees
// one policy, old or new.
//
// # Conditions
//
// A rule may add a CEL condition (cel-go, the language of protovalidate,
// Kubernetes and Envoy) that must also be true:
//
//	request.planter_id == principal.subject
//
// New compiles and type-checks each condition: request is the method's
// request message type, and principal has the fields subject, issuer,
// client_id (strings), audiences, scopes, roles, groups (lists of
// strings) and claims (map(string, dyn), the token's claims; reading it
// decodes the token payload on every evaluation, and an mTLS principal has
// none). A reference to a missing field, a syntax error, or a condition
// that is not a bool is a start-up error naming the method. Conditions of
// Config.Rules methods without a descriptor see request as dyn: references
// to it are checked only when evaluated (well-known wrapper types compare
// as their values, other messages need a registered descriptor).
//
// A condition is evaluated per call, after the rule admitted the caller,
// with a cost limit (Config.ConditionCostLimit). An evaluation error (a
// missing map key, a division by zero) or an exceeded cost denies, with
// ReasonConditionError and the error in the log.
//
// # Streams
//
// The rule and permission of a streaming method are decided when the
// stream starts. A condition on a server-streaming method is evaluated
// against the request, the first message received, before the handler's
// RecvMsg returns it; the handler cannot send before. Client-streaming
// and bidirectional methods cannot have conditions (New refuses them),
// because no single message speaks for the stream: check each message with
// Check in the handler.
//
// # Decisions
//
// Every decision is recorded: in the log (Config.DecisionLogLevel; by
// default allows at Debug and denies at Info) with the method, principal
// subject, permission, reason and the granting role; as attributes
// loam.authz.decision, loam.authz.permission and loam.authz.reason on the
// call's span; and in the counter loam.authz.decisions with the attributes
// decision and reason (no principal: its cardinality is bounded). Explain
// makes the same decision without recording it, and says why.
//
// # In handlers
//
// Check decides a permission for the caller with the same policy, for
// decisions about a particular resource. The interceptors put the
// Authorizer in the handler's context for it (NewContext does the same in
// tests). Check's decisions are logged and counted like the call's, and
// recorded as "loam.authz.check" span events, so they never hide the
// call's own decision on the span.
//
// # Errors
//
// The caller learns only codes.Unauthenticated "authentication required"
// (the rule needs a principal and there is none) or
// codes.PermissionDenied "permission denied". The reason goes to the log,
// the span and the counter. Check's errors match ErrUnauthenticated or
// ErrPermissionDenied and become those statuses when a handler returns
// them. New's errors wrap ErrInvalidConfig, ErrInvalidRule or ErrNoRule,
// all problems joined in one error.
//
// # Configuration
//
// Config is the "authz" section of a service's configuration, with koanf
// keys (roles, rules, scopes_grant, condition_cost_limit,
// decision_log_level); Config.Validate names each bad key. Options carry
// what a file cannot: WithLogger (default slog.Default()) and
// WithMeterProvider (default the OpenTelemetry global, a no-op until one
// is installed).
//
// # Cost
//
// A decision without a condition allocates nothing; the interceptors add
// one allocation, the context that carries the Authorizer to the handler.
// A condition costs what cel-go's evaluation costs, plus little: the
// activation over the request and principal is pooled, not a map.
//
// # What Loam adds to its libraries
//
// cel-go parses, checks and evaluates conditions. Loam adds the rules read
// from proto options with start-up refusal of unannotated methods, config
// rules that cannot contradict the contract, the role policy with
// wildcards and atomic reload, a typed principal for CEL, conditions on
// streams, the decision record and Explain. grpc-go's own authz package
// matches paths, headers and mTLS principals against a static policy; it
// knows neither token roles nor per-method rules in the contract.
package authz
