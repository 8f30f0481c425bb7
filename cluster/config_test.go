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
