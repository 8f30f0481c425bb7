package cluster

import (
	"encoding/json"
	"net"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// TestGossipMemberSpeaksOnlyForItself: a member whose metadata names
// another node is not recorded, so it cannot replace that node's addresses
// in what the meta leader registers; a member speaking for itself is.
func TestGossipMemberSpeaksOnlyForItself(t *testing.T) {
	g := &gossip{log: hclog.NewNullLogger(), members: map[string]member{}, poke: make(chan struct{}, 1)}
	node := func(name, id, clusterAddr string) *memberlist.Node {
		b, err := json.Marshal(nodeMeta{ID: id, ClusterAddr: clusterAddr})
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: b, State: memberlist.StateAlive}
	}
	g.NotifyJoin(node("core1", "core1", "10.0.0.1:7947"))
	g.NotifyJoin(node("intruder", "core1", "10.6.6.6:7947"))
	g.NotifyUpdate(node("intruder", "core1", "10.6.6.6:7947"))
	ms := g.snapshot()
	if len(ms) != 1 || ms[0].meta.ClusterAddr != "10.0.0.1:7947" {
		t.Fatalf("members: %+v", ms)
	}
}
