package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
)

// Mutual TLS on the cluster port (doc.go, "Security").
//
// Both sides present a certificate signed by the cluster CA and verify the
// other's against it; the certificate's node name (NodeOfCert) is the
// peer's authenticated identity, which the receiving side then holds every
// RPC's claimed server id and the group's voters to (auth.go). TLS 1.3
// only: one handshake round trip, and every record carries an AEAD tag, so
// a byte changed in flight breaks the connection instead of reaching Raft.
//
// Certificates and the CA pool are read through an atomic pointer at each
// handshake: Reload (on SIGHUP) swaps them and every new connection uses
// the new ones; established sessions carry on until they break.

// Certs is a node's certificate, key and cluster CA, reloadable from their
// files.
type Certs struct {
	certFile, keyFile, caFile string

	reloadMu sync.Mutex
	cur      atomic.Pointer[certState]
}

type certState struct {
	cert *tls.Certificate
	pool *x509.CertPool
	node string
	role string
}

// LoadCerts reads a node's certificate, key and cluster CA (PEM; the CA
// file may hold several CAs, as during a CA rotation). The certificate
// must chain to the CA and name a node.
func LoadCerts(certFile, keyFile, caFile string) (*Certs, error) {
	c := &Certs{certFile: certFile, keyFile: keyFile, caFile: caFile}
	st, err := c.read()
	if err != nil {
		return nil, err
	}
	c.cur.Store(st)
	return c, nil
}

// Reload reads the files again and, if they are a valid set naming the
// same node, makes new connections use them. On error the old set stays
// in force.
func (c *Certs) Reload() error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	st, err := c.read()
	if err != nil {
		return err
	}
	if old := c.cur.Load(); st.node != old.node {
		return fmt.Errorf("transport: reload: the new certificate names node %q, this node is %q", st.node, old.node)
	} else if st.role != old.role {
		return fmt.Errorf("transport: reload: the new certificate names role %q, this node's is %q (a node changes its role with a restart)", st.role, old.role)
	}
	c.cur.Store(st)
	return nil
}

// NodeID returns the node the certificate names.
func (c *Certs) NodeID() string { return c.cur.Load().node }

// Role returns the role the certificate names ("" for none).
func (c *Certs) Role() string { return c.cur.Load().role }

// Leaf returns the certificate in force (its serial and expiry for the
// reload log line).
func (c *Certs) Leaf() *x509.Certificate { return c.cur.Load().cert.Leaf }

func (c *Certs) read() (*certState, error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return nil, fmt.Errorf("transport: read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: read key: %w", err)
	}
	caPEM, err := os.ReadFile(c.caFile)
	if err != nil {
		return nil, fmt.Errorf("transport: read CA: %w", err)
	}
	cert, err := tlsKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("transport: %s and %s: %w", c.certFile, c.keyFile, err)
	}
	pool, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("transport: %s: %w", c.caFile, err)
	}
	node, err := verifyNode(pool, cert.Certificate, 0)
	if err != nil {
		return nil, fmt.Errorf("transport: %s: %w", c.certFile, err)
	}
	role, err := RoleOfCert(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("transport: %s: %w", c.certFile, err)
	}
	return &certState{cert: cert, pool: pool, node: node, role: role}, nil
}

// tlsKeyPair parses a PEM certificate (chain) and its key, with Leaf set.
func tlsKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil { // set by X509KeyPair since Go 1.23
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

func caPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := caPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate: %w", err)
		}
		if !ca.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA", ca.Subject.CommonName)
		}
		pool.AddCert(ca)
		n++
	}
	if n == 0 {
		return nil, errors.New("no CA certificate in the file")
	}
	return pool, nil
}

// verifyNode verifies a certificate chain (leaf first, DER) against the
// pool for usage (0: any) and returns the node its leaf names.
func verifyNode(pool *x509.CertPool, chain [][]byte, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return "", fmt.Errorf("parse certificate: %w", err)
		}
		certs[i] = c
	}
	opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if usage != 0 {
		opts.KeyUsages = []x509.ExtKeyUsage{usage}
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return "", err
	}
	return NodeOfCert(certs[0])
}

// serverConfig is the accepting side's TLS config: TLS 1.3 only, a client
// certificate required and verified against the CA pool in force.
func (c *Certs) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load().cert, nil
		},
		// The chain is verified in VerifyPeerCertificate, against the pool
		// read at this handshake: tls.Config.ClientCAs cannot be swapped.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyNode(c.cur.Load().pool, raw, x509.ExtKeyUsageClientAuth)
			return err
		},
		// No resumption: every connection shows a certificate the CA in
		// force accepts.
		SessionTicketsDisabled: true,
	}
}

// clientConfig is the dialing side's TLS config. The server's chain is
// verified in VerifyPeerCertificate against the CA pool in force; the
// default verification is off only because it checks a host name, and a
// node is named by its certificate's node URI, not by the address dialed.
func (c *Certs) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below, against the reloadable pool
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.cur.Load().cert, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyNode(c.cur.Load().pool, raw, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// Peer is the node on the other end of an authenticated connection, as
// its certificate names it.
type Peer struct {
	Node string
	Role string // RoleCore, RoleResource, or "" when the certificate names none
}

// peerOf is the node and role an established TLS connection's peer
// certificate names (verified during the handshake).
func peerOf(tc *tls.Conn) (Peer, error) {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return Peer{}, errors.New("no peer certificate")
	}
	node, err := NodeOfCert(certs[0])
	if err != nil {
		return Peer{}, err
	}
	role, err := RoleOfCert(certs[0])
	if err != nil {
		return Peer{}, err
	}
	return Peer{Node: node, Role: role}, nil
}

// handshake runs the TLS handshake on conn, as client or server, and
// returns the TLS connection and the peer. The caller sets the deadline.
func (c *Certs) handshake(ctx context.Context, conn net.Conn, client bool) (*tls.Conn, Peer, error) {
	var tc *tls.Conn
	if client {
		tc = tls.Client(conn, c.clientConfig())
	} else {
		tc = tls.Server(conn, c.serverConfig())
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, Peer{}, fmt.Errorf("%w: tls: %v", ErrHandshake, err)
	}
	p, err := peerOf(tc)
	if err != nil {
		return nil, Peer{}, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return tc, p, nil
}
