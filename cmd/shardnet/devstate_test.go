package main

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestDevStateKeepsWhatNodesRemember: a dev dir kept with -data-dir gets
// the same ports, token and keys on its next run (its Raft groups name
// their voters by those ports: new ones left a restarted dev cluster with
// no quorum), and refuses another size or a port someone took.
func TestDevStateKeepsWhatNodesRemember(t *testing.T) {
	dir := t.TempDir()
	st, err := loadDevState(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.fill(2); err != nil {
		t.Fatal(err)
	}
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	again, err := loadDevState(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.fill(2); err != nil {
		t.Fatal(err)
	}
	if again.Token != st.Token || string(again.ClusterKey) != string(st.ClusterKey) || string(again.GossipKey) != string(st.GossipKey) ||
		again.GossipPorts[1] != st.GossipPorts[1] || again.ClusterPorts[0] != st.ClusterPorts[0] {
		t.Fatalf("the second run got %+v, the first %+v", again, st)
	}
	if _, err := loadDevState(dir, 3); err == nil || !strings.Contains(err.Error(), "2 nodes, not 3") {
		t.Fatalf("another size: %v", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(st.ClusterPorts[1])))
	if err != nil {
		t.Skipf("cannot hold the port for the test: %v", err)
	}
	defer l.Close()
	if _, err := loadDevState(dir, 2); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a port in use: %v", err)
	}
}
