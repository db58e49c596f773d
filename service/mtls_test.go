package service_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/internal/stubserver"
	"github.com/loamhq/loam/service"
)

// testCA issues certificates for a TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loam test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for a server on loopback (server) or a
// client with the SPIFFE ID spiffeID.
func (ca *testCA) issue(t *testing.T, server bool, spiffeID string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "loam test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		u, _ := url.Parse(spiffeID)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMTLSEndToEnd serves over TLS that requires client certificates, with
// the authn section accepting them as identities: a workload with a SPIFFE
// ID is authenticated by the real handshake, one without a certificate is
// refused.
func TestMTLSEndToEnd(t *testing.T) {
	if err := registerEcho(); err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	serverTLS := &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, true, "")},
		ClientCAs:    ca.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS13,
	}
	cfg := testConfig()
	cfg.Authn = authn.Config{MTLS: true}
	cfg.Authz = authz.Config{Rules: map[string]authz.Rule{
		stubserver.UnaryMethod:  {Authenticated: true},
		stubserver.StreamMethod: {Authenticated: true},
	}}
	tel := quietTelemetry(t)
	srv, err := service.New(t.Context(), cfg, service.WithTelemetry(tel), service.WithoutSignals(), service.WithTLSConfig(serverTLS))
	if err != nil {
		t.Fatal(err)
	}
	registrars{&stubserver.Stub{Unary: echo}, echoService{}}.Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(t.Context()) }()
	defer func() {
		srv.Shutdown(t.Context())
		<-done
	}()

	dial := func(certs ...tls.Certificate) *grpc.ClientConn {
		conn, err := service.Dial(t.Context(), srv.Addr().String(), service.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: ca.pool, Certificates: certs, MinVersion: tls.VersionTLS13,
		})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	const id = "spiffe://loam.test/ns/captures/sa/worker"
	got, err := callEcho(t.Context(), dial(ca.issue(t, false, id)), "Private")
	if err != nil || got != id {
		t.Errorf("Private with a client certificate = %q, %v; want the SPIFFE ID %s", got, err, id)
	}
	anonymous := dial()
	if _, err := callEcho(t.Context(), anonymous, "Private"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Private without a client certificate = %v, want Unauthenticated", err)
	}
	if got, err := callEcho(t.Context(), anonymous, "Public"); err != nil || got != "anonymous" {
		t.Errorf("Public without a client certificate = %q, %v; want anonymous", got, err)
	}
}
