package authn_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
)

func TestMTLSPrincipal(t *testing.T) {
	iss := startIssuer(t)
	a := newAuthn(t, iss, func(c *authn.Config) { c.MTLS = true })
	cert := func(cn string, uris ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, Issuer: pkix.Name{CommonName: "mesh-ca"}, NotAfter: time.Now().Add(time.Hour)}
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, pu)
		}
		return c
	}
	withPeer := func(c *x509.Certificate, verified bool) context.Context {
		state := tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
		if verified {
			state.VerifiedChains = [][]*x509.Certificate{{c}}
		}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
	}
	tests := []struct {
		name     string
		ctx      context.Context
		want     string
		wantCode codes.Code
	}{
		{"SPIFFE ID", withPeer(cert("worker", "spiffe://acme.org/ns/prod/sa/worker", "https://acme.org/x"), true), "mtls:spiffe://acme.org/ns/prod/sa/worker", codes.OK},
		{"subject without SPIFFE ID", withPeer(cert("worker"), true), "mtls:CN=worker", codes.OK},
		{"two SPIFFE IDs", withPeer(cert("w", "spiffe://a/1", "spiffe://a/2"), true), "", codes.Unauthenticated},
		{"unverified certificate", withPeer(cert("worker", "spiffe://acme.org/w"), false), "", codes.Unauthenticated},
		{"no TLS", context.Background(), "", codes.Unauthenticated},
		{"token wins over certificate", metadata.NewIncomingContext(withPeer(cert("worker"), true), metadata.Pairs("authorization", "Bearer "+iss.Sign(iss.Claims(nil)))), "token:alice", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.UnaryInterceptor(tt.ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/" + svcName + "/Private"},
				func(ctx context.Context, _ any) (any, error) { return whoami(ctx).GetValue(), nil })
			if status.Code(err) != tt.wantCode || (err == nil && got != tt.want) {
				t.Errorf("UnaryInterceptor() = %v, %v; want %q, %v", got, err, tt.want, tt.wantCode)
			}
		})
	}
}
