package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/agent"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to
// certFile and keyFile, and returns the certificate.
func selfSigned(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// servedCert is the certificate a fresh HTTPS connection to addr is shown.
func servedCert(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestHTTPS: with -http-tls-cert and -http-tls-key the API answers over
// HTTPS a client that trusts the certificate (api.NewHTTPClient with the
// CA file); plain HTTP to that port fails with a message that says to use
// https://; a reload (SIGHUP) serves the files' new certificate to new
// connections, and a reload of a broken pair keeps the old one.
func TestHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api-key.pem")
	first := selfSigned(t, certFile, keyFile, "first")
	httpPort := testcluster.FreePort(t)
	a, err := agent.Start(agent.Options{
		Cluster: cluster.Config{
			Name: "n1", Role: fsm.RoleCore, DataDir: filepath.Join(dir, "n1"), BindAddr: "127.0.0.1",
			GossipPort: testcluster.FreePort(t), ClusterPort: testcluster.FreePort(t), BootstrapExpect: 1,
			ClusterKey: []byte("k"), GossipKey: make([]byte, 32), LocalGossip: true, ServeData: true,
		},
		HTTPBind:    net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		Token:       "op",
		HTTPTLSCert: certFile, HTTPTLSKey: keyFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if !strings.HasPrefix(a.URL(), "https://") {
		t.Fatalf("URL %s, want https://", a.URL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hc, err := api.NewHTTPClient(certFile) // self-signed: its own CA
	if err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(a.URL(), "op", hc)
	testcluster.WaitFor(t, 20*time.Second, func() error { return c.Health(ctx, true) })
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("status over HTTPS: %v", err)
	}
	// Without the CA the certificate is not trusted.
	if err := api.NewClient(a.URL(), "op", &http.Client{}).Health(ctx, false); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA: %v", err)
	}
	// Plain HTTP to the HTTPS port.
	plain := strings.Replace(a.URL(), "https://", "http://", 1)
	err = api.NewClient(plain, "op", nil).Health(ctx, false)
	if e := api.AsError(err); e == nil || e.Status != http.StatusBadRequest || !strings.Contains(e.Message, "the node serves HTTPS: use an https:// address") {
		t.Fatalf("plain HTTP to the HTTPS port: %v", err)
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	if got := servedCert(t, addr); !got.Equal(first) {
		t.Fatalf("served %s, want the first certificate", got.Subject)
	}
	second := selfSigned(t, certFile, keyFile, "second")
	if err := a.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got := servedCert(t, addr); !got.Equal(second) {
		t.Fatalf("after the reload: served %s, want the second certificate", got.Subject)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadTLS(); err == nil {
		t.Fatal("a reload of a broken key succeeded")
	}
	if got := servedCert(t, addr); !got.Equal(second) {
		t.Fatalf("after a failed reload: served %s, want the second certificate still", got.Subject)
	}
}
