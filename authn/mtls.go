package authn

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/loamhq/loam/authn/internal/token"
)

// peerPrincipal returns the principal of the client certificate that the
// TLS handshake verified, nil when the call has none. Only a chain in
// VerifiedChains counts: a certificate the server did not verify (no
// ClientCAs, or RequestClientCert) is no identity.
//
// The subject is the certificate's SPIFFE ID (its one spiffe:// URI SAN),
// else its subject distinguished name. Two SPIFFE IDs are an error, as the
// SPIFFE X.509-SVID specification allows exactly one.
func peerPrincipal(ctx context.Context) (*Principal, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, nil
	}
	leaf := info.State.VerifiedChains[0][0]
	subject := ""
	for _, u := range leaf.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if subject != "" {
			return nil, &Error{Reason: token.ReasonCertificate, Detail: "client certificate has more than one SPIFFE ID"}
		}
		subject = u.String()
	}
	if subject == "" {
		subject = leaf.Subject.String()
	}
	if subject == "" {
		return nil, &Error{Reason: token.ReasonCertificate, Detail: "client certificate has neither a SPIFFE ID nor a subject"}
	}
	return &Principal{id: Identity{Subject: subject, Issuer: leaf.Issuer.String(), Expiry: leaf.NotAfter, Method: AuthMTLS}}, nil
}
