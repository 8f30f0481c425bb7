package cluster

import (
	"maps"
	"testing"

	"github.com/shardnet/shardnet/fsm"
)

// TestClusterVersionTarget: the cluster version is the lowest version among
// the registered nodes that have not left (a dead node counts), and never
// above this binary's.
func TestClusterVersionTarget(t *testing.T) {
	nd := func(id, state string, v int) fsm.NodeRecord { return fsm.NodeRecord{ID: id, State: state, Version: v} }
	tests := []struct {
		name  string
		nodes []fsm.NodeRecord
		own   int
		want  int
		count int
	}{
		{"all new", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 2), nd("b", fsm.NodeAlive, 2)}, 2, 2, 2},
		{"one reports no version", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 2), nd("b", fsm.NodeAlive, 0)}, 2, 1, 2},
		{"an old node is dead", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 2), nd("b", fsm.NodeDead, 1)}, 2, 1, 2},
		{"an old node is suspect", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 2), nd("b", fsm.NodeSuspect, 0)}, 2, 1, 2},
		{"an old node is draining", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 2), nd("b", fsm.NodeDraining, 0)}, 2, 1, 2},
		{"an old node left", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 2), nd("b", fsm.NodeLeft, 0)}, 2, 2, 2},
		{"a newer node", []fsm.NodeRecord{nd("a", fsm.NodeAlive, 3), nd("b", fsm.NodeAlive, 3)}, 2, 2, 2},
	}
	for _, tt := range tests {
		got, versions := clusterVersionTarget(tt.nodes, tt.own)
		if got != tt.want || len(versions) != tt.count {
			t.Errorf("%s: version %d of %v, want %d of %d nodes", tt.name, got, versions, tt.want, tt.count)
		}
		for id, v := range versions {
			if v < 1 {
				t.Errorf("%s: node %s has version %d", tt.name, id, v)
			}
		}
	}
	_, versions := clusterVersionTarget([]fsm.NodeRecord{nd("a", fsm.NodeAlive, 0), nd("b", fsm.NodeAlive, 2)}, 2)
	if !maps.Equal(versions, map[string]int{"a": 1, "b": 2}) {
		t.Errorf("versions %v", versions)
	}
}
