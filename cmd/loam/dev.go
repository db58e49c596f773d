package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/loamhq/loam/internal/devissuer"
)

const devUsage = `Usage:
  loam dev issuer [--addr 127.0.0.1:9400] [--audience AUD]
                  [--client ID:SECRET[:ROLE,...]]... [--token SUBJECT[:ROLE,...]]...

Runs a local OpenID Connect issuer until interrupted: discovery, a JWKS and
the client credentials grant on a loopback address, minting RFC 9068 access
tokens (typ at+jwt, roles in a "roles" claim) for --audience. A service
whose development configuration trusts it authenticates real tokens with no
identity provider running:

  authn:
    issuers:
      - url: http://127.0.0.1:9400
        audiences: [captures-api]

--client adds a client for the client credentials grant (repeatable);
--token prints a token for a made-up user, valid for --ttl (repeatable):

  loam dev issuer --audience captures-api --client worker:s3cret:planter \
    --token alice:planter --token admin:admin

It is a development tool: it keeps its key in memory, mints tokens for
anyone who asks, and listens on loopback only.
`

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func runDev(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "issuer" {
		fmt.Fprint(stderr, devUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return devIssuer(ctx, args[1:], stdout, stderr)
}

// devIssuer runs the issuer until ctx ends.
func devIssuer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("loam dev issuer", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() { fmt.Fprint(stderr, devUsage) }
	addr := fl.String("addr", "127.0.0.1:9400", "loopback `address` to listen on")
	aud := fl.String("audience", "loam-dev", "the `aud` of the tokens")
	ttl := fl.Duration("ttl", time.Hour, "how long the --token tokens are valid")
	var clients, tokens repeated
	fl.Var(&clients, "client", "a client `ID:SECRET[:ROLE,...]` of the client credentials grant")
	fl.Var(&tokens, "token", "print a token for `SUBJECT[:ROLE,...]`")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "loam dev issuer: unexpected argument %q\n", fl.Arg(0))
		return 2
	}
	var cs []devissuer.Client
	for _, c := range clients {
		parts := strings.SplitN(c, ":", 3)
		if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
			fmt.Fprintf(stderr, "loam dev issuer: --client %q is not ID:SECRET[:ROLE,...]\n", c)
			return 2
		}
		cl := devissuer.Client{ID: parts[0], Secret: parts[1]}
		if len(parts) == 3 && parts[2] != "" {
			cl.Roles = strings.Split(parts[2], ",")
		}
		cs = append(cs, cl)
	}
	iss, err := devissuer.StartOn(*addr, *aud, cs...)
	if err != nil {
		fmt.Fprintln(stderr, "loam dev issuer:", err)
		return 1
	}
	defer iss.Close()
	fmt.Fprintf(stdout, "issuer %s, audience %s\n", iss.URL, *aud)
	fmt.Fprintf(stdout, "  discovery %s/.well-known/openid-configuration\n  token     %s/token\n", iss.URL, iss.URL)
	for _, c := range cs {
		fmt.Fprintf(stdout, "client %s (roles %s): client credentials grant with its secret\n", c.ID, strings.Join(c.Roles, ","))
	}
	for _, spec := range tokens {
		subject, roles, _ := strings.Cut(spec, ":")
		var rs []string
		if roles != "" {
			rs = strings.Split(roles, ",")
		}
		tok, err := iss.MintToken(devissuer.Token{Subject: subject, Roles: rs, TTL: *ttl})
		if err != nil {
			fmt.Fprintln(stderr, "loam dev issuer:", err)
			return 1
		}
		fmt.Fprintf(stdout, "token for %s (roles %s, valid %s):\n  %s\n", subject, roles, *ttl, tok)
	}
	fmt.Fprintln(stdout, "serving until interrupted")
	<-ctx.Done()
	return 0
}
