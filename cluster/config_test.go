package cluster

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/transport"
)

// A node whose certificate names another node does not start: its peers
// would refuse every RPC it sent under its own server ids.
func TestNodeRefusesAnotherNodesCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := transport.WriteCA(dir, "ca", transport.KeyEd25519, 0, false); err != nil {
		t.Fatal(err)
	}
	cf, kf, err := transport.WriteNodeCert(dir, dir, transport.NodeCertOptions{Node: "n2", Role: transport.RoleCore, KeyType: transport.KeyEd25519}, false)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := transport.LoadCerts(cf, kf, filepath.Join(dir, transport.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Name: "n1", Role: fsm.RoleCore, DataDir: filepath.Join(dir, "data"), TLS: certs})
	if err == nil || !strings.Contains(err.Error(), `names node "n2", but this node is "n1"`) {
		t.Fatalf("New = %v, want the name mismatch refused", err)
	}
}

// A node whose certificate names another role, or none, does not start:
// its peers believe the certificate (route calls: a core node's own meta
// writes), not the node.
func TestNodeRefusesACertificateOfAnotherRole(t *testing.T) {
	dir := t.TempDir()
	if err := transport.WriteCA(dir, "ca", transport.KeyEd25519, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ certRole, want string }{
		{transport.RoleResource, `names role "resource", but this node's role is "core"`},
		{"", "names no role"},
	} {
		out := filepath.Join(dir, "r"+tc.certRole)
		cf, kf, err := transport.WriteNodeCert(dir, out, transport.NodeCertOptions{Node: "n1", Role: tc.certRole, KeyType: transport.KeyEd25519}, false)
		if err != nil {
			t.Fatal(err)
		}
		certs, err := transport.LoadCerts(cf, kf, filepath.Join(dir, transport.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(Config{Name: "n1", Role: fsm.RoleCore, DataDir: filepath.Join(out, "data"), TLS: certs})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("certificate role %q: New = %v, want %q", tc.certRole, err, tc.want)
		}
	}
}
