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
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config =\n%+v\nwant\n%+v", cfg, want)
	}
	// Flags alone, with a repeated -join.
	cfg, err = loadAgentConfig([]string{"-name", "n1", "-data-dir", dir, "-join", "a:1", "-join", "b:2"})
	if err != nil || cfg.Name != "n1" || !reflect.DeepEqual(cfg.Join, []string{"a:1", "b:2"}) || cfg.Role != "core" {
		t.Fatalf("flags only: %+v, %v", cfg, err)
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
	} {
		_, err := loadAgentConfig(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

func TestClusterKey(t *testing.T) {
	c := agentConfig{}
	if c.clusterKey() != nil {
		t.Fatal("no token, no key: want nil")
	}
	c.Token = "t"
	k1 := c.clusterKey()
	if len(k1) != 32 || string(k1) == "t" {
		t.Fatalf("derived key %x", k1)
	}
	c.ClusterKey = "explicit"
	if string(c.clusterKey()) != "explicit" {
		t.Fatal("explicit key must win")
	}
}
