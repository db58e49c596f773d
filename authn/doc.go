// Package authn authenticates the callers of a Loam service and gives the
// service its own identity for outbound calls.
//
// An Authenticator, made by New from a Config, verifies OAuth 2.0 access
// tokens (JWT, RFC 9068) from one or more trusted OpenID Connect issuers,
// such as Keycloak, and optionally accepts a verified client certificate
// (mTLS) instead. It yields a Principal, which the server interceptors put
// in the handler's context (FromContext).
//
//	a, err := authn.New(cfg.Authn, authn.WithPublicMethods(publicMethods...))
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(a.UnaryInterceptor),
//		grpc.ChainStreamInterceptor(a.StreamInterceptor))
//
// For outbound calls, NewClientCredentials attaches the service's own
// token and ForwardCredentials passes on the caller's.
//
// # Verification
//
// A token is refused before it is parsed when longer than
// Config.MaxTokenBytes (16 KiB). It must be a compact JWS (the JSON
// serialization is refused) spelled canonically, as RFC 7515 spells it:
// unpadded base64url with no whitespace and no unused bits set, so one
// token has one spelling. An ECDSA signature may carry either S: signers
// such as Go's crypto/ecdsa, OpenSSL and Java emit the high one half the
// time. Its alg must be one of Config.Algorithms (RS256, ES256
// and EdDSA by default; "none" and HMAC can never be configured), without
// jwk, jku, x5u or crit headers: keys come only from the issuer's JWKS, and
// URLs in a token are never fetched. The typ header may be absent, JWT or
// at+jwt; with Config.RequireAccessTokenType only at+jwt is accepted, and
// any other typ (an ID token's or a logout token's explicit type) never is.
//
// The iss claim picks the issuer among Config.Issuers (a token from any
// other is refused without a network request), its kid picks the key, and
// the signature must verify. Then exp is required, and exp, nbf and iat are
// checked with Config.Leeway of clock skew; aud must name one of the
// issuer's audiences; azp must be one of its authorized parties when these
// are configured; sub is required; and every claim read must have the
// expected JSON type. A token valid for longer than Config.MaxTokenLifetime
// (24h by default; exp minus iat, or minus now without iat) is refused.
// JSON null in a mapped claim (roles: null) reads as absent.
//
// A verified token is kept in a bounded cache, keyed by its SHA-256, until
// its exp but for at most Config.CacheMaxAge (5m), and only while the
// issuer's key set, as last fetched, still holds the key that signed it:
// presenting it again costs a hash, a lookup and a pointer comparison,
// with no signature check and no allocation. Failures are not cached.
//
// # Keys and discovery
//
// Discovery is lazy: New does not contact the issuers, so a service starts
// while its identity provider is down. The first token of an issuer fetches
// its discovery document (go-oidc checks that it names the issuer) and its
// JWKS; Ready does the same ahead of traffic. A token with a kid the key
// set lacks causes a refetch, but at most one fetch per issuer per
// Config.JWKSRefetchInterval (10s by default, as Keycloak's adapters do):
// a flood of forged kids costs at most one request per interval, and
// callers that arrive while a fetch is in flight wait for it rather than
// starting another. When the endpoint is down, known keys keep verifying
// and unknown ones fail at once with ErrUnavailable. A caller whose context
// ends stops waiting (with the context's error); the fetch goes on for the
// others, bounded by 10s or the HTTP client's timeout, and a fetch that
// times out on its own is ErrUnavailable, not the caller's deadline. A key
// set older than Config.JWKSMaxAge (1h by default) is refetched in the
// background on its next use, so a key the issuer removed stops verifying
// within that time, for cached tokens too. Keys that are RSA under 2048
// bits, or whose key_ops leave out verify, are skipped with a log line.
// Check reports, for readiness, whether every issuer has usable keys.
//
// # Principals and claims
//
// Principal holds the subject, issuer, client (client_id, else azp),
// audiences, scopes, roles, groups, expiry and auth method, read through
// methods: it is read-only, since the cache shares it between calls, and
// its lists are Strings. NewPrincipal makes one, for tests and custom
// authentication. Claim and Claims read any other claim. Roles, groups and scopes come from the
// issuer's ClaimsConfig: the "keycloak" preset reads realm_access.roles,
// resource_access.<client>.roles, groups and scope; the "generic" preset
// reads roles, groups, and scope or scp (a space-separated string or an
// array); either can be given other claim paths.
//
// An mTLS principal (Config.MTLS) comes only from a certificate chain the
// TLS handshake verified. Its subject is the SPIFFE ID of the certificate's
// URI SAN, else the subject distinguished name. A bearer token, when
// present, takes precedence.
//
// # Server interceptors
//
// A method named by WithPublicMethods admits callers without credentials;
// every other method requires them. The service package names the public
// methods of the access table it compiles once (authz's PublicMethods), so
// a method made public in the .proto or in authz.rules is public to
// authentication and authorization alike. Invalid credentials are
// refused on every method, public ones included, so a misconfigured client
// fails loudly instead of being served as anonymous. Authorization (roles,
// permissions, conditions) is not this package's business: package authz
// reads the Principal.
//
// # Errors
//
// Verify returns an *Error whose Reason is one of a fixed set of codes,
// each with a sentinel for errors.Is (ErrExpired, ErrAudience, ...), or the
// context's error. The interceptors send the caller only
// codes.Unauthenticated with the message "authentication required", or
// codes.Unavailable "authentication temporarily unavailable" when the
// issuer's keys cannot be fetched (a retry may succeed); the reason goes to the log (slog, Info level, Warn for ErrUnavailable; never
// the token), to an event "loam.authn.failure" on the call's span, and to
// the counter loam.authn.failures with a "reason" attribute.
//
// # Configuration
//
// Config is the "authn" section of a service's configuration, with koanf
// keys; Config.Validate names each bad key. What a file cannot hold comes
// as options: WithLogger (default slog.Default()), WithMeterProvider
// (default the OpenTelemetry global, a no-op until one is installed),
// WithHTTPClient, WithPublicMethods, and for outbound credentials
// WithRefreshBefore and WithoutTransportSecurity.
//
// # Outbound credentials
//
// NewClientCredentials obtains tokens with the client credentials grant
// (golang.org/x/oauth2/clientcredentials), reuses each until a minute
// before it expires, and fetches once for all concurrent calls. Like
// ForwardCredentials, it refuses connections without transport security
// unless WithoutTransportSecurity.
//
// # What Loam adds to its libraries
//
// go-oidc does discovery; go-jose parses and verifies signatures; otter
// holds the cache; x/oauth2 runs the client credentials grant. go-oidc's
// IDTokenVerifier is built for ID tokens: one audience, a fixed 5-minute
// nbf leeway, no iat or typ checks, errors without codes, and a JWKS
// refetch on every unknown kid. Loam verifies access tokens with the same
// go-jose calls, adding several issuers and audiences, azp, typ, leeway,
// header policy, reason codes, the rate-limited shared key fetch, the
// verified-token cache, claim mapping, mTLS identities, and the gRPC
// plumbing.
package authn
