package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAgentConfigPrecedence(t *testing.T) {
	t.Setenv("SHARDNET_TOKEN", "") // an operator's shell may export one
	t.Setenv("SHARDNET_CLUSTER_KEY", "ck")
	t.Setenv("SHARDNET_GOSSIP_KEY", testGossipKey)
	dir := t.TempDir()
	file := filepath.Join(dir, "node.hcl")
	if err := os.WriteFile(file, []byte(`
name             = "from-file"
role             = "resource"
data_dir         = "/data/file"
http_addr        = "127.0.0.1:9000"
bootstrap_expect = 0
join             = ["10.0.0.1:7946", "10.0.0.2:7946"]
zone             = "a"
stake            = 7
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadAgentConfig([]string{"-config", file, "-zone", "b", "-gossip-port", "8000"})
	if err != nil {
		t.Fatal(err)
	}
	want := defaultAgentConfig()
	want.Name, want.Role, want.DataDir, want.HTTPAddr = "from-file", "resource", "/data/file", "127.0.0.1:9000"
	want.Join = []string{"10.0.0.1:7946", "10.0.0.2:7946"}
	want.Zone, want.Stake, want.GossipPort = "b", 7, 8000 // flags win; untouched file values stay
	want.ClusterKey, want.Encrypt, want.gossipKey = "ck", testGossipKey, testGossipKeyBytes
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config =\n%+v\nwant\n%+v", cfg, want)
	}
	// Flags alone, with a repeated -join.
	cfg, err = loadAgentConfig([]string{"-name", "n1", "-data-dir", dir, "-join", "a:1", "-join", "b:2"})
	if err != nil || cfg.Name != "n1" || !reflect.DeepEqual(cfg.Join, []string{"a:1", "b:2"}) || cfg.Role != "core" {
		t.Fatalf("flags only: %+v, %v", cfg, err)
	}
}

// -idle-one-proc is on unless the file or a flag turns it off; a flag
// wins over the file.
func TestIdleOneProcFlag(t *testing.T) {
	t.Setenv("SHARDNET_CLUSTER_KEY", "ck")
	t.Setenv("SHARDNET_GOSSIP_KEY", testGossipKey)
	dir := t.TempDir()
	off := filepath.Join(dir, "off.hcl")
	if err := os.WriteFile(off, []byte("idle_one_proc = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"-name", "n1", "-data-dir", dir}
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"-idle-one-proc=false"}, false},
		{[]string{"-config", off}, false},
		{[]string{"-config", off, "-idle-one-proc"}, true},
	} {
		cfg, err := loadAgentConfig(append(append([]string{}, base...), c.args...))
		if err != nil || cfg.IdleOneProc != c.want {
			t.Errorf("%v: idle-one-proc %v, %v; want %v", c.args, cfg.IdleOneProc, err, c.want)
		}
	}
}

func TestLeaderRebalanceFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "off": -1, "30s": 30 * time.Second} {
		got, err := agentConfig{LeaderRebalance: in}.leaderRebalance()
		if err != nil || got != want {
			t.Errorf("-leader-rebalance %q = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestHashCheckIntervalFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "off": -1, "90s": 90 * time.Second} {
		got, err := agentConfig{HashCheck: in}.hashCheckInterval()
		if err != nil || got != want {
			t.Errorf("-hash-check-interval %q = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestPlacementFlags(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "10s": 10 * time.Second} {
		got, err := agentConfig{DeadAfter: in}.deadAfter()
		if err != nil || got != want {
			t.Errorf("-dead-after %q = %v, %v; want %v", in, got, err, want)
		}
	}
	if got := (agentConfig{CapacityDisk: 7}).diskBytes(); got != 7 {
		t.Errorf("-capacity-disk 7: disk bytes %d", got)
	}
	if got := (agentConfig{CapacityDisk: 7, DiskBytes: 9}).diskBytes(); got != 9 {
		t.Errorf("-disk-bytes 9 beside -capacity-disk 7: disk bytes %d", got)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	_ = os.WriteFile(bad, []byte(`name = `), 0o644)
	unknown := filepath.Join(dir, "unknown.hcl")
	_ = os.WriteFile(unknown, []byte(`nmae = "x"`), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-data-dir", dir}, "-name is required"},
		{[]string{"-name", "x"}, "-data-dir is required"},
		{[]string{"-name", "x", "-data-dir", dir, "-http-addr", "nope"}, "-http-addr"},
		{[]string{"-config", bad}, "config"},
		{[]string{"-config", unknown}, "nmae"},
		{[]string{"-config", filepath.Join(dir, "missing.hcl")}, "missing.hcl"},
		{[]string{"-name", "x", "-data-dir", dir, "extra"}, "unexpected arguments"},
		{[]string{"-name", "x", "-data-dir", dir, "-leader-rebalance", "soon"}, "-leader-rebalance"},
		{[]string{"-name", "x", "-data-dir", dir, "-leader-rebalance", "0s"}, "-leader-rebalance"},
		{[]string{"-name", "x", "-data-dir", dir, "-hash-check-interval", "-5m"}, "-hash-check-interval"},
		{[]string{"-name", "x", "-data-dir", dir, "-chunk-gc-interval", "0s"}, "-chunk-gc-interval"},
		{[]string{"-name", "x", "-data-dir", dir, "-chunk-gc-grace", "off"}, "-chunk-gc-grace"},
		{[]string{"-name", "x", "-data-dir", dir, "-dead-after", "0s"}, "-dead-after"},
		{[]string{"-name", "x", "-data-dir", dir, "-dead-after", "soon"}, "-dead-after"},
		{[]string{"-name", "x", "-data-dir", dir, "-token", "a", "-token-file", bad}, "give one"},
		{[]string{"-name", "x", "-data-dir", dir, "-token-file", filepath.Join(dir, "nofile")}, "-token-file"},
		{[]string{"-name", "x", "-data-dir", dir, "-cluster-key-file", filepath.Join(dir, "nofile")}, "-cluster-key-file"},
		{[]string{"-name", "x", "-data-dir", dir, "-http-idle-timeout", "forever"}, "-http-idle-timeout"},
		{[]string{"-name", "x", "-data-dir", dir, "-http-body-timeout", "0s"}, "-http-body-timeout"},
		{[]string{"-name", "x", "-data-dir", dir, "-http-body-min-rate", "0"}, "-http-body-min-rate"},
		{[]string{"-name", "x", "-data-dir", dir, "-http-max-conns", "-2"}, "-http-max-conns"},
		{[]string{"-name", "x", "-data-dir", dir, "-http-max-conns-per-client", "0"}, "-http-max-conns-per-client"},
	} {
		_, err := loadAgentConfig(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

// testGossipKey is base64 of 16 bytes, testGossipKeyBytes.
const testGossipKey = "AAECAwQFBgcICQoLDA0ODw=="

var testGossipKeyBytes = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// TestAgentNeedsItsKeys: an agent without a gossip key does not start,
// even with an operator token (keys are no longer derived from it), and
// says what to pass; -insecure starts it anyway, and a keyring file in the
// data dir stands for the gossip key. (The cluster port needs certificates
// instead of a key: TestAgentRefusesToStartWithoutCertificates.)
func TestAgentNeedsItsKeys(t *testing.T) {
	for _, env := range []string{"SHARDNET_TOKEN", "SHARDNET_CLUSTER_KEY", "SHARDNET_GOSSIP_KEY"} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	base := []string{"-name", "x", "-data-dir", dir}
	_, err := loadAgentConfig(append(base, "-token", "t"))
	if err == nil {
		t.Fatal("an agent with a token but no keys started")
	}
	for _, want := range []string{"no gossip key: pass -encrypt-file FILE or set $SHARDNET_GOSSIP_KEY", "-insecure"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	cfg, err := loadAgentConfig(append(base, "-insecure"))
	if err != nil || cfg.ClusterKey != "" || cfg.gossipKey != nil {
		t.Fatalf("-insecure: %v (key %q, gossip key %x)", err, cfg.ClusterKey, cfg.gossipKey)
	}
	t.Setenv("SHARDNET_CLUSTER_KEY", "ck")
	if _, err := loadAgentConfig(base); err == nil || strings.Contains(err.Error(), "cluster key") || !strings.Contains(err.Error(), "gossip key") {
		t.Fatalf("cluster key but no gossip key: %v", err)
	}
	// A key that is not base64 of 16, 24 or 32 bytes is refused without
	// being echoed.
	for _, bad := range []string{"not-base64!", "c2hvcnQ=", "s3cret-" + testGossipKey} {
		_, err := loadAgentConfig(append(base, "-encrypt", bad))
		if err == nil || !strings.Contains(err.Error(), "16, 24 or 32") || strings.Contains(err.Error(), bad) {
			t.Errorf("-encrypt %q: %v", bad, err)
		}
	}
	cfg, err = loadAgentConfig(append(base, "-encrypt", testGossipKey))
	if err != nil || string(cfg.gossipKey) != string(testGossipKeyBytes) || !cfg.secretOnCommandLine {
		t.Fatalf("-encrypt: %x %v, %v", cfg.gossipKey, cfg.secretOnCommandLine, err)
	}
	// The keyring a node keeps in its data dir is its gossip key.
	if err := os.WriteFile(filepath.Join(dir, "gossip.keyring"), []byte(`["`+testGossipKey+`"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAgentConfig(base); err != nil {
		t.Fatalf("keyring file in the data dir: %v", err)
	}
	if _, err := loadAgentConfig(append(base, "-http-tls-cert", "c.pem")); err == nil || !strings.Contains(err.Error(), "-http-tls-key") {
		t.Fatalf("-http-tls-cert alone: %v", err)
	}
}

// TestSecretsFromFilesAndEnvironment: the token and the cluster key come
// from their files (trimmed) or the environment, so that neither needs to
// be on the command line, where process listings and pprof show it; a
// secret on the command line is noted for the warning.
func TestSecretsFromFilesAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	keyFile := filepath.Join(dir, "key")
	gossipFile := filepath.Join(dir, "gossip")
	_ = os.WriteFile(gossipFile, []byte(testGossipKey+"\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(tokFile, []byte("tok-from-file\n"), 0o600)
	_ = os.WriteFile(keyFile, []byte("key-from-file\n"), 0o600)
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	base := []string{"-name", "x", "-data-dir", dir}

	cfg, err := loadAgentConfig(append(base, "-token-file", tokFile, "-cluster-key-file", keyFile, "-encrypt-file", gossipFile))
	if err != nil || cfg.Token != "tok-from-file" || cfg.ClusterKey != "key-from-file" || string(cfg.gossipKey) != string(testGossipKeyBytes) || cfg.secretOnCommandLine {
		t.Fatalf("from files: %q %q %x %v, %v", cfg.Token, cfg.ClusterKey, cfg.gossipKey, cfg.secretOnCommandLine, err)
	}
	t.Setenv("SHARDNET_TOKEN", "tok-from-env")
	t.Setenv("SHARDNET_CLUSTER_KEY", "key-from-env")
	t.Setenv("SHARDNET_GOSSIP_KEY", testGossipKey)
	cfg, err = loadAgentConfig(base)
	if err != nil || cfg.Token != "tok-from-env" || cfg.ClusterKey != "key-from-env" || string(cfg.gossipKey) != string(testGossipKeyBytes) {
		t.Fatalf("from the environment: %q %q %x, %v", cfg.Token, cfg.ClusterKey, cfg.gossipKey, err)
	}
	// A file wins over the environment; a flag too, noted as unsafe.
	cfg, err = loadAgentConfig(append(base, "-token-file", tokFile))
	if err != nil || cfg.Token != "tok-from-file" {
		t.Fatalf("file over environment: %q, %v", cfg.Token, err)
	}
	cfg, err = loadAgentConfig(append(base, "-token", "tok-flag"))
	if err != nil || cfg.Token != "tok-flag" || !cfg.secretOnCommandLine {
		t.Fatalf("flag: %q %v, %v", cfg.Token, cfg.secretOnCommandLine, err)
	}
	if _, err := loadAgentConfig(append(base, "-token-file", empty)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token file: %v", err)
	}
}
