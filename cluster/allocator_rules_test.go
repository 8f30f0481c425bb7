package cluster

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shardnet/shardnet/fsm"
)

// reported builds version-4 records (Reported) from
// "id/role/zone/operator/flags" specs; flags: "d" serve-data, "f" a full
// disk (free below the reserve), "m1" at most one replica.
func reported(specs ...string) []fsm.NodeRecord {
	var out []fsm.NodeRecord
	for _, s := range specs {
		p := strings.Split(s, "/")
		nd := fsm.NodeRecord{ID: p[0], ServerID: p[0] + "@1", Role: p[1], Zone: p[2], Operator: p[3], State: fsm.NodeAlive,
			Reported: true, DiskBytes: 100 << 30, DiskFree: 50 << 30}
		flags := ""
		if len(p) > 4 {
			flags = p[4]
		}
		nd.ServeData = strings.Contains(flags, "d")
		if strings.Contains(flags, "f") {
			nd.DiskFree = 100 << 20
		}
		if strings.Contains(flags, "m1") {
			nd.MaxReplicas = 1
		}
		out = append(out, nd)
	}
	return out
}

func ids(rs []fsm.Replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.NodeID)
	}
	return out
}

func TestPlaceRules(t *testing.T) {
	tests := []struct {
		name     string
		nodes    []fsm.NodeRecord
		channels []fsm.ChannelRecord
		req      PlaceRequest
		want     []string
		errText  string // a refusal's text must contain it
	}{
		{"operators spread after zones", reported("r1/resource/a/x", "r2/resource/a/x", "r3/resource/a/y", "r4/resource/b/x"),
			nil, PlaceRequest{Replicas: 3}, []string{"r1", "r4", "r3"}, ""},
		{"operators spread where the zones allow", reported("r1/resource/a/x", "r2/resource/a/y", "r3/resource/b/x"),
			nil, PlaceRequest{Replicas: 2}, []string{"r2", "r3"}, ""},
		{"zones before operators", reported("r1/resource/a/x", "r2/resource/b/x", "r3/resource/c/x", "r4/resource/a/y", "r5/resource/a/z"),
			nil, PlaceRequest{Replicas: 3}, []string{"r4", "r2", "r3"}, ""},
		{"core nodes without -serve-data host nothing", reported("c1/core/a/x", "c2/core/b/x/d", "r1/resource/c/x"),
			nil, PlaceRequest{Replicas: 2}, []string{"r1", "c2"}, ""},
		{"core-only cluster without -serve-data refuses with the numbers", reported("c1/core/a/x", "c2/core/b/x", "c3/core/c/x/d"),
			nil, PlaceRequest{Replicas: 3}, nil, "needs 3 eligible nodes, 1 available (of 3 nodes: 2 core nodes without -serve-data)"},
		{"a disk below its reserve takes nothing", reported("r1/resource/a/x/f", "r2/resource/b/x", "r3/resource/c/x"),
			nil, PlaceRequest{Replicas: 2}, []string{"r2", "r3"}, ""},
		{"max replicas", reported("r1/resource/a/x/m1", "r2/resource/b/x", "r3/resource/c/x"),
			[]fsm.ChannelRecord{placed("x", false, "r1")}, PlaceRequest{Replicas: 2}, []string{"r2", "r3"}, ""},
		{"dedicated refusal counts", reported("r1/resource/a/x", "r2/resource/b/x", "r3/resource/c/x"),
			[]fsm.ChannelRecord{placed("x", false, "r1", "r2")}, PlaceRequest{Replicas: 3, Dedicated: true}, nil,
			"needs 3 free nodes (hosting no other channel), 1 available (of 3 nodes: 2 host other channels)"},
		{"zone refusal counts", reported("r1/resource/a/x", "r2/resource/b/x", "r3/resource/c/x/f"),
			nil, PlaceRequest{Replicas: 2, Zones: []string{"a", "c"}}, nil,
			"needs 2 eligible nodes in zones [a c], 1 available (of 3 nodes: 1 below their free-disk reserve, 1 outside the zones asked for)"},
		{"pinned core node without -serve-data", reported("c1/core/a/x"), nil, PlaceRequest{Replicas: 1, Nodes: []string{"c1"}}, nil,
			`pinned node "c1" is a core node started without -serve-data`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := place(tc.nodes, tc.channels, tc.req)
			if tc.errText != "" {
				if !errors.Is(err, ErrNotEnoughNodes) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want ErrNotEnoughNodes saying %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids(got), tc.want) {
				t.Fatalf("placement = %v, want %v", ids(got), tc.want)
			}
		})
	}
}

func TestPlaceOne(t *testing.T) {
	ns := reported("r1/resource/a/x", "r2/resource/b/x", "r3/resource/c/y", "r4/resource/a/y", "r5/resource/d/x", "r6/resource/b/z")
	ns[0].State = fsm.NodeDead
	ch := placed("x", false, "r1", "r2", "r3")
	other := placed("y", false, "r5")
	got, err := PlaceOne(ns, []fsm.ChannelRecord{ch, other}, ch, []string{"r1"})
	if err != nil {
		t.Fatal(err)
	}
	// r2 (b, x) and r3 (c, y) stay: zone a or d, operator z unused by any
	// is not in those zones; r5 (d, x) is loaded; r4 (a, y) is not.
	if got.NodeID != "r4" || got.ServerID != "r4@1" || got.Added != 0 {
		t.Fatalf("PlaceOne = %+v, want r4", got)
	}

	t.Run("never a node of the channel", func(t *testing.T) {
		small := reported("r1/resource/a/x", "r2/resource/b/x", "r3/resource/c/y")
		_, err := PlaceOne(small, []fsm.ChannelRecord{ch}, ch, []string{"r1"})
		if !errors.Is(err, ErrNotEnoughNodes) || !strings.Contains(err.Error(), "needs 3 eligible nodes, 2 available") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("dedicated: its own nodes are no obstacle, others' loaded nodes are", func(t *testing.T) {
		ded := placed("d", true, "r1", "r2", "r3")
		got, err := PlaceOne(ns, []fsm.ChannelRecord{ded, other}, ded, []string{"r1"})
		if err != nil {
			t.Fatal(err)
		}
		if got.NodeID != "r4" {
			t.Fatalf("PlaceOne = %v, want r4 (r5 hosts another channel)", got.NodeID)
		}
	})
	t.Run("pinned: only its pins", func(t *testing.T) {
		pin := placed("p", false, "r2", "r3")
		pin.Nodes = []string{"r2", "r3", "r6"}
		got, err := PlaceOne(ns, []fsm.ChannelRecord{pin}, pin, nil)
		if err != nil || got.NodeID != "r6" {
			t.Fatalf("PlaceOne = %v, %v; want r6", got.NodeID, err)
		}
	})
}
