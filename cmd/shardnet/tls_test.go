package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/transport"
)

// The CA and node certificate commands make files the agent loads, with
// the key 0600, and refuse to overwrite without -force.
func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	node := filepath.Join(dir, "n1")
	expect(t, shardnet(t, nil, "", "tls", "ca", "create", "-dir", ca, "-key-type", "ed25519"), 0, "ca-key.pem")
	expect(t, shardnet(t, nil, "", "tls", "ca", "create", "-dir", ca), 1, "")
	// The role is the CA's word, so it must be given.
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-node", "n1", "-ca-dir", ca, "-out", node), 2, "")
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-node", "n1", "-role", "admin", "-ca-dir", ca, "-out", node), 2, "")
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-node", "n1", "-role", "core", "-ca-dir", ca, "-out", node, "-ip", "127.0.0.1"), 0, `node "n1"`)
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-node", "n1", "-role", "core", "-ca-dir", ca, "-out", node), 1, "")
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-node", "n1", "-role", "core", "-ca-dir", ca, "-out", node, "-if-missing"), 0, "kept")
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-role", "core", "-ca-dir", ca, "-out", node), 2, "")
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-node", "n1", "-role", "core", "-ip", "nope"), 2, "")
	certFile, keyFile := transport.NodeCertFiles(node, "n1")
	if _, err := os.Stat(filepath.Join(node, transport.CACertFile)); err != nil {
		t.Fatalf("no copy of the CA certificate beside the node's: %v", err)
	}
	for _, f := range []string{keyFile, filepath.Join(ca, transport.CAKeyFile)} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, st.Mode(), err)
		}
	}
	cfg := agentConfig{Name: "n1", Role: "core", TLSCert: certFile, TLSKey: keyFile, TLSCA: filepath.Join(ca, transport.CACertFile)}
	certs, err := cfg.clusterTLS()
	if err != nil || certs.NodeID() != "n1" || certs.Role() != "core" || len(certs.Leaf().IPAddresses) != 1 {
		t.Fatalf("clusterTLS: %v, %v", certs, err)
	}
	// An agent whose -role is not its certificate's does not start.
	cfg.Role = "resource"
	if _, err := cfg.clusterTLS(); err == nil || !strings.Contains(err.Error(), `names role "core", but -role is "resource"`) {
		t.Fatalf("clusterTLS with another role: %v", err)
	}
	// -if-missing also makes the CA when there is none (docker compose).
	other := filepath.Join(dir, "fresh")
	expect(t, shardnet(t, nil, "", "tls", "cert", "create", "-if-missing", "-node", "a", "-node", "b", "-role", "resource", "-ca-dir", other, "-out", other), 0, `node "b"`)
}

func TestAgentRefusesToStartWithoutCertificates(t *testing.T) {
	dir := t.TempDir()
	if err := transport.WriteCA(dir, "ca", "", 0, false); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := transport.WriteNodeCert(dir, dir, transport.NodeCertOptions{Node: "n2", Role: transport.RoleCore}, false)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, transport.CACertFile)
	for _, tc := range []struct {
		name string
		cfg  agentConfig
		want string // "" for no error
	}{
		{"nothing", agentConfig{Name: "n2"}, "give -tls-cert, -tls-key and -tls-ca"},
		{"insecure", agentConfig{Name: "n2", Insecure: true}, ""},
		{"both", agentConfig{Name: "n2", Insecure: true, TLSCert: certFile, TLSKey: keyFile, TLSCA: caFile}, "both set"},
		{"partial", agentConfig{Name: "n2", TLSCert: certFile}, "give all of"},
		{"another node's", agentConfig{Name: "n1", Role: "core", TLSCert: certFile, TLSKey: keyFile, TLSCA: caFile}, `names node "n2"`},
		{"another role's", agentConfig{Name: "n2", Role: "resource", TLSCert: certFile, TLSKey: keyFile, TLSCA: caFile}, `names role "core"`},
		{"right", agentConfig{Name: "n2", Role: "core", TLSCert: certFile, TLSKey: keyFile, TLSCA: caFile}, ""},
	} {
		certs, err := tc.cfg.clusterTLS()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		case tc.want == "" && (certs == nil) != tc.cfg.Insecure:
			t.Errorf("%s: certs = %v", tc.name, certs)
		}
	}
	if strings.Contains(noCertsHelp, "\n") || !strings.Contains(noCertsHelp, "-insecure") || !strings.Contains(noCertsHelp, "shardnet tls cert create") {
		t.Fatalf("the refusal is not one line naming the fix: %q", noCertsHelp)
	}
	// The HCL keys.
	file := filepath.Join(dir, "node.hcl")
	if err := os.WriteFile(file, []byte("name = \"n2\"\ndata_dir = \"/d\"\ntls_cert = \""+certFile+"\"\ntls_key = \""+keyFile+"\"\ntls_ca = \""+caFile+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHARDNET_TOKEN", "")
	t.Setenv("SHARDNET_CLUSTER_KEY", "")
	t.Setenv("SHARDNET_GOSSIP_KEY", testGossipKey)
	cfg, err := loadAgentConfig([]string{"-config", file})
	if err != nil {
		t.Fatal(err)
	}
	if certs, err := cfg.clusterTLS(); err != nil || certs.NodeID() != "n2" {
		t.Fatalf("from HCL: %v %v", certs, err)
	}
}

// SIGHUP makes the agent reread its certificate files.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	if err := transport.WriteCA(dir, "ca", "", 0, false); err != nil {
		t.Fatal(err)
	}
	cf, kf, err := transport.WriteNodeCert(dir, dir, transport.NodeCertOptions{Node: "n1", Role: transport.RoleCore}, false)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := transport.LoadCerts(cf, kf, filepath.Join(dir, transport.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	old := certs.Leaf().SerialNumber
	stop := reloadOnSIGHUP(certs, hclog.NewNullLogger())
	defer stop()
	if _, _, err := transport.WriteNodeCert(dir, dir, transport.NodeCertOptions{Node: "n1", Role: transport.RoleCore}, true); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for certs.Leaf().SerialNumber.Cmp(old) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shardnet dev gives each node a certificate naming its role, and replaces
// one a dev dir of an earlier release kept without a role.
func TestDevCertificatesNameTheRole(t *testing.T) {
	dir := t.TempDir()
	nodes := []devNode{{"core1", "core"}, {"res1", "resource"}}
	if _, err := tlsCertsForDev(dir, nodes[:1]); err != nil {
		t.Fatal(err)
	}
	// res1's certificate as an earlier release made it: no role.
	if _, _, err := transport.WriteNodeCert(filepath.Join(dir, "ca"), filepath.Join(dir, "res1"), transport.NodeCertOptions{Node: "res1"}, false); err != nil {
		t.Fatal(err)
	}
	certs, err := tlsCertsForDev(dir, nodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		if got := certs[nd.name].Role(); got != nd.role {
			t.Errorf("%s: certificate role %q, want %q", nd.name, got, nd.role)
		}
	}
}
