package authn

import (
	"context"
	"fmt"
	"net/url"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc/credentials"
)

// NewClientCredentials returns gRPC per-RPC credentials that attach the
// service's own access token, obtained with the OAuth 2.0 client
// credentials grant from cfg (errors wrap ErrInvalidConfig). Use it with
// grpc.WithPerRPCCredentials.
//
// The token is fetched on the first call, reused, and replaced when it is
// within WithRefreshBefore (one minute) of its expiry; concurrent calls
// wait for a single fetch. The fetch itself does not follow a call's
// context (golang.org/x/oauth2 does not take one); the HTTP client of
// WithHTTPClient bounds it (10s by default). A failed fetch fails the call,
// with codes.Unavailable from gRPC, and is retried on the next call.
//
// The credentials require transport security, unless
// WithoutTransportSecurity. They are safe for concurrent use and hold no
// resources.
//
// Options read: WithHTTPClient, WithRefreshBefore, WithoutTransportSecurity.
func NewClientCredentials(cfg ClientCredentialsConfig, opts ...Option) (credentials.PerRPCCredentials, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := newOptions(opts)
	if o.earlyRefresh < 0 {
		return nil, fmt.Errorf("%w: WithRefreshBefore(%s) is negative", ErrInvalidConfig, o.earlyRefresh)
	}
	cc := &clientcredentials.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret.Reveal(),
		TokenURL:     cfg.TokenURL,
		Scopes:       cfg.Scopes,
	}
	if cfg.Audience != "" {
		cc.EndpointParams = url.Values{"audience": {cfg.Audience}}
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, o.client)
	// cc.Token fetches every time; the reuse source caches, serialises
	// callers, and refreshes early.
	fetch := tokenSourceFunc(func() (*oauth2.Token, error) { return cc.Token(ctx) })
	return &tokenCredentials{
		src:    oauth2.ReuseTokenSourceWithExpiry(nil, fetch, o.earlyRefresh),
		secure: !o.insecure,
	}, nil
}

type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

type tokenCredentials struct {
	src    oauth2.TokenSource
	secure bool
}

func (c *tokenCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tok, err := c.src.Token()
	if err != nil {
		return nil, fmt.Errorf("authn: client credentials token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + tok.AccessToken}, nil
}

func (c *tokenCredentials) RequireTransportSecurity() bool { return c.secure }

// ForwardCredentials returns gRPC per-RPC credentials that pass on the
// caller's bearer token: inside a handler, an outgoing call made with the
// handler's context carries the token that authenticated the incoming call
// (the Principal in the context). Without such a principal, or for an mTLS
// principal, the call goes without a token. Forward only to services that
// accept the same audience: the token is replayed as is.
//
// The credentials require transport security, unless
// WithoutTransportSecurity, and are safe for concurrent use.
//
// Options read: WithoutTransportSecurity.
func ForwardCredentials(opts ...Option) credentials.PerRPCCredentials {
	return forwardCredentials{secure: !newOptions(opts).insecure}
}

type forwardCredentials struct{ secure bool }

func (f forwardCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	p, ok := FromContext(ctx)
	if !ok || p.token == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + p.token}, nil
}

func (f forwardCredentials) RequireTransportSecurity() bool { return f.secure }
