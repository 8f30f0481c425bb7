package main

import (
	"encoding/base64"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardnet/shardnet/api"

	"github.com/shardnet/shardnet/server"
	"github.com/shardnet/shardnet/server/servertest"
)

// TestGossipKeyringCommand: the CLI walks the nodes GET /v1/nodes lists and
// changes each one's keyring through its own address; a rotation is
// install, use, remove.
func TestGossipKeyringCommand(t *testing.T) {
	const token = "op"
	mem := servertest.NewMemory()
	s := server.New(server.Config{Backend: mem, Token: token, Registry: prometheus.NewRegistry()})
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	oldKey, newKey := testGossipKey, base64.StdEncoding.EncodeToString(make([]byte, 32))
	// The node lists itself under its listener's address, without a
	// scheme, as a real node does.
	mem.HTTPAddr = hs.Listener.Addr().String()
	mem.GossipKeys = []string{oldKey}
	env := map[string]string{"SHARDNET_ADDR": hs.URL, "SHARDNET_TOKEN": token}

	keygen := shardnet(t, env, "", "gossip", "keygen")
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keygen.out)); err != nil || len(k) != 32 || keygen.code != 0 {
		t.Fatalf("keygen printed %q (%v)", keygen.out, err)
	}
	keyRow(t, shardnet(t, env, "", "gossip", "keyring", "-list"), oldKey, "1/1 1/1")
	r := shardnet(t, env, newKey+"\n", "gossip", "keyring", "-install", "-")
	keyRow(t, r, oldKey, "1/1 1/1")
	keyRow(t, r, newKey, "1/1 0/1")
	r = shardnet(t, env, "", "gossip", "keyring", "-remove", oldKey)
	if r.code != 1 || !strings.Contains(r.err, "gossip_key_primary") {
		t.Fatalf("removal of the primary key: %+v", r)
	}
	r = shardnet(t, env, "", "gossip", "keyring", "-use", newKey)
	keyRow(t, r, oldKey, "1/1 0/1")
	keyRow(t, r, newKey, "1/1 1/1")
	expect(t, shardnet(t, env, "", "gossip", "keyring", "-remove", oldKey), 0, "")
	if got := strings.Join(mem.GossipKeys, ","); got != newKey {
		t.Fatalf("keyring after the rotation: %s, want only the new key", got)
	}
	r = shardnet(t, env, "", "gossip", "keyring", "-use", oldKey)
	if r.code != 1 || !strings.Contains(r.err, "gossip_key_not_installed") {
		t.Fatalf("use of a removed key: %+v", r)
	}
	r = shardnet(t, env, "", "gossip", "keyring", "-install", "c2hvcnQ=")
	if r.code != 1 || !strings.Contains(r.err, "invalid_gossip_key") {
		t.Fatalf("install of a short key: %+v", r)
	}
	expect(t, shardnet(t, env, "", "gossip", "keyring", "-list", "-use", newKey), 2, "")
	expect(t, shardnet(t, env, "", "gossip", "keyring"), 2, "")
	r = shardnet(t, map[string]string{"SHARDNET_ADDR": hs.URL}, "", "gossip", "keyring", "-list")
	if r.code != 1 || !strings.Contains(r.err, "unauthorized") {
		t.Fatalf("keyring without the operator token: %+v", r)
	}
}

// TestGossipKeyringCommandReportsAbsentNodes: a node that does not answer
// fails the command and is named; the others are still changed; a node
// that left is not asked.
func TestGossipKeyringCommandReportsAbsentNodes(t *testing.T) {
	mem := servertest.NewMemory()
	s := server.New(server.Config{Backend: mem, Registry: prometheus.NewRegistry()})
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	mem.HTTPAddr = hs.Listener.Addr().String()
	mem.GossipKeys = []string{testGossipKey}
	closed := httptest.NewServer(nil)
	closedAddr := closed.Listener.Addr().String()
	closed.Close()
	mem.Peers = []api.Node{
		{ID: "down-1", State: "dead", HTTPAddr: closedAddr},
		{ID: "gone-1", State: "left", HTTPAddr: closedAddr},
	}
	newKey := base64.StdEncoding.EncodeToString(make([]byte, 24))
	r := shardnet(t, map[string]string{"SHARDNET_ADDR": hs.URL}, "", "gossip", "keyring", "-install", newKey)
	if r.code != 1 || !strings.Contains(r.err, "down-1: ") || strings.Contains(r.err, "gone-1") ||
		!strings.Contains(r.err, "install applied on 1 of 2 nodes") {
		t.Fatalf("install with a node down: %+v", r)
	}
	if len(mem.GossipKeys) != 2 {
		t.Fatalf("the node that answered was not changed: %v", mem.GossipKeys)
	}
}

// TestCLIOverHTTPS: https:// addresses work with -ca-file or
// $SHARDNET_CA_FILE naming the CA of the node's certificate; without it
// the certificate is refused, and plain HTTP to the HTTPS port says so.
func TestCLIOverHTTPS(t *testing.T) {
	mem := servertest.NewMemory("nft")
	s := server.New(server.Config{Backend: mem, Registry: prometheus.NewRegistry()})
	hs := httptest.NewTLSServer(s.Handler())
	t.Cleanup(hs.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SHARDNET_ADDR": hs.URL}
	r := shardnet(t, env, "", "kv", "put", "nft", "k", "v")
	if r.code != 1 || !strings.Contains(r.err, "certificate") {
		t.Fatalf("an unknown CA was trusted: %+v", r)
	}
	expect(t, shardnet(t, env, "", "kv", "put", "-ca-file", ca, "nft", "k", "v"), 0, "1\n")
	env["SHARDNET_CA_FILE"] = ca
	expect(t, shardnet(t, env, "", "kv", "get", "nft", "k"), 0, "v")
	r = shardnet(t, env, "", "kv", "get", "-ca-file", filepath.Join(t.TempDir(), "none.pem"), "nft", "k")
	if r.code != 1 || !strings.Contains(r.err, "CA file") {
		t.Fatalf("a missing CA file: %+v", r)
	}
	r = shardnet(t, map[string]string{"SHARDNET_ADDR": strings.Replace(hs.URL, "https://", "http://", 1)}, "", "kv", "get", "nft", "k")
	if r.code != 1 || !strings.Contains(r.err, "the node serves HTTPS: use an https:// address") {
		t.Fatalf("plain HTTP to the HTTPS port: %+v", r)
	}
}

// keyRow checks that a successful keyring command printed key's row with
// the given INSTALLED and PRIMARY columns.
func keyRow(t *testing.T, r result, key, cols string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	for _, line := range strings.Split(r.out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == key {
			if got := f[1] + " " + f[2]; got != cols {
				t.Fatalf("key %s: %s, want %s\n%s", key, got, cols, r.out)
			}
			return
		}
	}
	t.Fatalf("no row for key %s in\n%s", key, r.out)
}
