package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Node certificates (docs/operations.md "Certificates").
//
// A node is named by its certificate: the URI SAN "shardnet-node:<id>"
// carries the node id, the URI SAN "shardnet-role:<core|resource>" its
// role, and the CommonName repeats the id for humans (openssl x509 -text). Only the URI SAN counts: a CommonName is not checked by
// anything, and a DNS SAN cannot hold every node id. The cluster CA signs
// every node's certificate; each certificate serves as both server and
// client certificate, since every node both dials and accepts.

// NodeURIScheme is the scheme of the URI SAN that names a node.
const NodeURIScheme = "shardnet-node"

// RoleURIScheme is the scheme of the URI SAN that names a node's role
// ("shardnet-role:core" or "shardnet-role:resource"). The role is bound
// into the certificate because the cluster port trusts a core node with
// more than a resource node (node-internal meta writes, docs/security.md
// "Cluster port"), and a resource node may be run by a stranger: its
// word about its own role is worth nothing, the CA's signature is.
const RoleURIScheme = "shardnet-role"

// The roles a certificate may name (fsm.RoleCore and fsm.RoleResource).
const (
	RoleCore     = "core"
	RoleResource = "resource"
)

// Default validities: a CA outlives many node certificates; a node
// certificate is rotated yearly (SIGHUP reloads it without a restart).
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// Key algorithms for NewCA and NewNodeCert.
const (
	KeyECDSA   = "ecdsa"   // ECDSA P-256, the default
	KeyEd25519 = "ed25519" // Ed25519
)

// CA file names in a CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// NodeCertFiles returns the certificate and key file names a node's
// certificate is written to by WriteNodeCert.
func NodeCertFiles(dir, node string) (certFile, keyFile string) {
	return filepath.Join(dir, node+".pem"), filepath.Join(dir, node+"-key.pem")
}

// NodeOfCert returns the node id a certificate names: its one
// "shardnet-node:" URI SAN.
func NodeOfCert(c *x509.Certificate) (string, error) {
	var node string
	for _, u := range c.URIs {
		if u.Scheme != NodeURIScheme {
			continue
		}
		id := u.Opaque
		if id == "" || node != "" {
			return "", fmt.Errorf("transport: certificate %q: want exactly one non-empty %s: URI", c.Subject.CommonName, NodeURIScheme)
		}
		node = id
	}
	if node == "" {
		return "", fmt.Errorf("transport: certificate %q names no node (no %s: URI SAN)", c.Subject.CommonName, NodeURIScheme)
	}
	return node, nil
}

// RoleOfCert returns the role a certificate names: its one
// "shardnet-role:" URI SAN, "" when it has none (a certificate made before
// roles were bound, which no agent accepts: cluster.Config.Validate).
func RoleOfCert(c *x509.Certificate) (string, error) {
	var role string
	for _, u := range c.URIs {
		if u.Scheme != RoleURIScheme {
			continue
		}
		if role != "" || !validRole(u.Opaque) {
			return "", fmt.Errorf("transport: certificate %q: want at most one %s: URI, naming %s or %s", c.Subject.CommonName, RoleURIScheme, RoleCore, RoleResource)
		}
		role = u.Opaque
	}
	return role, nil
}

func validRole(r string) bool { return r == RoleCore || r == RoleResource }

func newKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "", KeyECDSA:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("transport: key type %q: want %s or %s", alg, KeyECDSA, KeyEd25519)
	}
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("transport: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewCA creates a self-signed cluster CA named name, valid for validity
// (0: DefaultCAValidity), with a key of type alg (KeyECDSA or KeyEd25519).
// It returns the certificate and key in PEM.
func NewCA(name, alg string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := newKey(alg)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"shardnet"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clocks a little behind
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: create CA certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// NodeCertOptions shape a node certificate.
type NodeCertOptions struct {
	Node     string        // node id (required)
	Role     string        // RoleCore or RoleResource; "" names none (no agent accepts such a certificate)
	IPs      []net.IP      // extra IP SANs (for tools that check them; shardnet checks the node name)
	DNSNames []string      // extra DNS SANs
	Validity time.Duration // 0: DefaultCertValidity
	KeyType  string        // KeyECDSA (default) or KeyEd25519
}

// NewNodeCert creates a key pair and a certificate, signed by the CA,
// naming o.Node, usable as both client and server certificate. It returns
// both in PEM.
func NewNodeCert(caCertPEM, caKeyPEM []byte, o NodeCertOptions) (certPEM, keyPEM []byte, err error) {
	if o.Node == "" || strings.ContainsAny(o.Node, " /\\\x00") {
		return nil, nil, fmt.Errorf("transport: node id %q: want a non-empty id without spaces or slashes", o.Node)
	}
	if o.Role != "" && !validRole(o.Role) {
		return nil, nil, fmt.Errorf("transport: role %q: want %s or %s", o.Role, RoleCore, RoleResource)
	}
	if o.Validity <= 0 {
		o.Validity = DefaultCertValidity
	}
	uris := []*url.URL{{Scheme: NodeURIScheme, Opaque: o.Node}}
	if o.Role != "" {
		uris = append(uris, &url.URL{Scheme: RoleURIScheme, Opaque: o.Role})
	}
	ca, err := tlsKeyPair(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: CA: %w", err)
	}
	if !ca.Leaf.IsCA {
		return nil, nil, errors.New("transport: the CA certificate is not a CA")
	}
	key, err := newKey(o.KeyType)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(o.Validity)
	if notAfter.After(ca.Leaf.NotAfter) {
		notAfter = ca.Leaf.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: o.Node, Organization: []string{"shardnet"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
		IPAddresses:  o.IPs,
		DNSNames:     o.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, key.Public(), ca.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: create node certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// WriteFileAtomic writes data to path through a temporary file and a
// rename, so a node reloading its certificate (SIGHUP) never reads half a
// file. Unless overwrite, an existing path is an error.
func WriteFileAtomic(path string, data []byte, perm os.FileMode, overwrite bool) error {
	if !overwrite {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s exists (give -force to replace it)", path)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error { f.Close(); os.Remove(tmp); return err }
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// WriteCA creates a CA (NewCA) and writes ca.pem and ca-key.pem (0600) to
// dir. It refuses to replace an existing CA key unless overwrite.
func WriteCA(dir, name, alg string, validity time.Duration, overwrite bool) error {
	certPEM, keyPEM, err := NewCA(name, alg, validity)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("transport: CA dir: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600, overwrite); err != nil {
		return fmt.Errorf("transport: write CA key: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, CACertFile), certPEM, 0o644, true); err != nil {
		return fmt.Errorf("transport: write CA certificate: %w", err)
	}
	return nil
}

// WriteNodeCert creates a node certificate signed by the CA in caDir and
// writes <node>.pem and <node>-key.pem (0600) to outDir, returning their
// paths.
func WriteNodeCert(caDir, outDir string, o NodeCertOptions, overwrite bool) (certFile, keyFile string, err error) {
	caCert, err := os.ReadFile(filepath.Join(caDir, CACertFile))
	if err != nil {
		return "", "", fmt.Errorf("transport: read CA certificate: %w", err)
	}
	caKey, err := os.ReadFile(filepath.Join(caDir, CAKeyFile))
	if err != nil {
		return "", "", fmt.Errorf("transport: read CA key: %w", err)
	}
	certPEM, keyPEM, err := NewNodeCert(caCert, caKey, o)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", "", fmt.Errorf("transport: output dir: %w", err)
	}
	certFile, keyFile = NodeCertFiles(outDir, o.Node)
	// The key first: a reload between the two renames finds the old
	// certificate with the new key, a pair that does not match, refuses it
	// and keeps serving the old one (Certs.Reload).
	if err := WriteFileAtomic(keyFile, keyPEM, 0o600, overwrite); err != nil {
		return "", "", fmt.Errorf("transport: write node key: %w", err)
	}
	if err := WriteFileAtomic(certFile, certPEM, 0o644, overwrite); err != nil {
		return "", "", fmt.Errorf("transport: write node certificate: %w", err)
	}
	return certFile, keyFile, nil
}
