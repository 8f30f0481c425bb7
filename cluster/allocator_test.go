package cluster

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shardnet/shardnet/fsm"
)

// nodes builds registry records from "id/role/zone/state" specs.
func nodes(specs ...string) []fsm.NodeRecord {
	var out []fsm.NodeRecord
	for _, s := range specs {
		p := strings.Split(s, "/")
		out = append(out, fsm.NodeRecord{ID: p[0], ServerID: p[0] + "@1", Role: p[1], Zone: p[2], State: p[3]})
	}
	return out
}

func placed(ch string, dedicated bool, ids ...string) fsm.ChannelRecord {
	c := fsm.ChannelRecord{Name: ch, Dedicated: dedicated}
	for _, id := range ids {
		c.Placement = append(c.Placement, fsm.Replica{NodeID: id, ServerID: id + "@1"})
	}
	return c
}

func TestPlace(t *testing.T) {
	six := nodes("c1/core/a/alive", "c2/core/b/alive", "c3/core/c/alive",
		"r1/resource/a/alive", "r2/resource/b/alive", "r3/resource/c/alive")
	tests := []struct {
		name     string
		nodes    []fsm.NodeRecord
		channels []fsm.ChannelRecord
		req      PlaceRequest
		want     []string
		err      error
	}{
		{"resource nodes first, one per zone", six, nil, PlaceRequest{Replicas: 3}, []string{"r1", "r2", "r3"}, nil},
		{"least loaded first", six, []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3")}, PlaceRequest{Replicas: 3}, []string{"c1", "c2", "c3"}, nil},
		{"zones spread before load", nodes("r1/resource/a/alive", "r2/resource/a/alive", "r3/resource/b/alive"), nil, PlaceRequest{Replicas: 2}, []string{"r1", "r3"}, nil},
		{"zones reused when fewer zones than replicas", nodes("r1/resource/a/alive", "r2/resource/a/alive", "r3/resource/b/alive"), nil, PlaceRequest{Replicas: 3}, []string{"r1", "r3", "r2"}, nil},
		{"dead and suspect nodes skipped", nodes("r1/resource/a/dead", "r2/resource/b/suspect", "r3/resource/c/alive"), nil, PlaceRequest{Replicas: 1}, []string{"r3"}, nil},
		{"not enough nodes", nodes("r1/resource/a/alive", "r2/resource/b/dead"), nil, PlaceRequest{Replicas: 2}, nil, ErrNotEnoughNodes},
		{"zone filter", six, nil, PlaceRequest{Replicas: 2, Zones: []string{"b"}}, []string{"r2", "c2"}, nil},
		{"dedicated takes empty nodes", six, []fsm.ChannelRecord{placed("x", false, "r1", "r2")}, PlaceRequest{Replicas: 3, Dedicated: true}, []string{"r3", "c1", "c2"}, nil},
		{"dedicated nodes are not shared", six, []fsm.ChannelRecord{placed("x", true, "r1", "r2", "r3")}, PlaceRequest{Replicas: 3}, []string{"c1", "c2", "c3"}, nil},
		{"dedicated needs enough empty nodes", six, []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3", "c1")}, PlaceRequest{Replicas: 3, Dedicated: true}, nil, ErrNotEnoughNodes},
		{"pins", six, nil, PlaceRequest{Replicas: 2, Nodes: []string{"c3", "r1"}}, []string{"c3", "r1"}, nil},
		{"pin unknown node", six, nil, PlaceRequest{Replicas: 1, Nodes: []string{"zz"}}, nil, ErrInvalidRequest},
		{"pin dead node", nodes("r1/resource/a/dead"), nil, PlaceRequest{Replicas: 1, Nodes: []string{"r1"}}, nil, ErrNotEnoughNodes},
		{"first replica is the node first in the fewest placements", nodes("c1/core/a/alive", "c2/core/b/alive", "c3/core/c/alive"),
			[]fsm.ChannelRecord{placed("x", false, "c1", "c2", "c3"), placed("y", false, "c2", "c1", "c3")},
			PlaceRequest{Replicas: 3}, []string{"c3", "c1", "c2"}, nil},
		{"pins keep their order", six, []fsm.ChannelRecord{placed("x", false, "c3")}, PlaceRequest{Replicas: 2, Nodes: []string{"c3", "r1"}}, []string{"c3", "r1"}, nil},
		{"pin into a dedicated channel's node", six, []fsm.ChannelRecord{placed("x", true, "r1")}, PlaceRequest{Replicas: 1, Nodes: []string{"r1"}}, nil, ErrNotEnoughNodes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := place(tc.nodes, tc.channels, tc.req)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			var ids []string
			for _, r := range got {
				ids = append(ids, r.NodeID)
				if r.ServerID != r.NodeID+"@1" {
					t.Errorf("server id %q for %q", r.ServerID, r.NodeID)
				}
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Fatalf("placement = %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestPlaceIsDeterministic(t *testing.T) {
	ns := nodes("r3/resource/c/alive", "r1/resource/a/alive", "c1/core/a/alive", "r2/resource/b/alive")
	first, _ := place(ns, nil, PlaceRequest{Replicas: 3})
	for range 20 {
		again, _ := place(ns, nil, PlaceRequest{Replicas: 3})
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("placement changed: %v then %v", first, again)
		}
	}
}

// Channels placed one after another on the same nodes take turns at being
// first (the replica that stands first for the group's first election), so
// their first leaders spread evenly.
func TestPlaceSpreadsFirstReplicas(t *testing.T) {
	ns := nodes("c1/core/a/alive", "c2/core/a/alive", "c3/core/a/alive")
	var channels []fsm.ChannelRecord
	for i := range 9 {
		p, err := place(ns, channels, PlaceRequest{Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		channels = append(channels, fsm.ChannelRecord{Name: string(rune('a' + i)), Placement: p})
	}
	first := map[string]int{}
	for _, c := range channels {
		first[c.Placement[0].NodeID]++
	}
	if first["c1"] != 3 || first["c2"] != 3 || first["c3"] != 3 {
		t.Fatalf("first replicas of 9 channels on 3 nodes: %v, want 3 each", first)
	}
}
