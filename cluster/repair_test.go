package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/shardnet/shardnet/fsm"
)

// moveStrings renders moves as "channel:from>to".
func moveStrings(moves []placementMove) []string {
	var out []string
	for _, m := range moves {
		out = append(out, m.Channel+":"+m.From.NodeID+">"+m.To.NodeID)
	}
	return out
}

var noLimits = repairLimits{PerNode: 100, Max: 100}

func TestPlanMoves(t *testing.T) {
	six := nodes("c1/core/a/alive", "c2/core/b/alive", "c3/core/c/alive",
		"r1/resource/a/dead", "r2/resource/b/alive", "r3/resource/c/alive")
	tests := []struct {
		name     string
		nodes    []fsm.NodeRecord
		channels []fsm.ChannelRecord
		busy     map[string]bool
		inFlight map[string]int
		lim      repairLimits
		want     []string
		blocked  []string // "channel: reason substring"
	}{
		{name: "nothing to move", nodes: six, channels: []fsm.ChannelRecord{placed("x", false, "c1", "c2", "c3")}, lim: noLimits},
		{name: "dead replica to a node of its zone, resource first", nodes: six,
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3")}, lim: noLimits,
			want: []string{"x:r1>c1"}},
		{name: "zones the channel lacks before load",
			nodes:    nodes("c1/core/a/alive", "c2/core/b/alive", "r1/resource/a/dead", "r2/resource/b/alive", "r3/resource/c/alive", "r4/resource/b/alive"),
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3"), placed("y", false, "c1", "r2", "r3")},
			lim:      noLimits, want: []string{"x:r1>c1"}},
		{name: "each move counts in the next one's load", nodes: six,
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "c2"), placed("y", false, "r1", "r3", "c3")},
			lim:      noLimits, want: []string{"x:r1>c1", "y:r1>r2"}},
		{name: "a channel with a move in flight waits", nodes: six,
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3")}, busy: map[string]bool{"x": true}, lim: noLimits},
		{name: "per-node limit picks the next node", nodes: six,
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3")}, inFlight: map[string]int{"c1": 1},
			lim: repairLimits{PerNode: 1, Max: 10}, want: []string{"x:r1>c2"}},
		{name: "per-node limit everywhere: waits, not blocked", nodes: six,
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "r3")}, inFlight: map[string]int{"c1": 1, "c2": 1, "c3": 1},
			lim: repairLimits{PerNode: 1, Max: 10}},
		{name: "cluster-wide limit", nodes: six,
			channels: []fsm.ChannelRecord{placed("x", false, "r1", "r2", "c2"), placed("y", false, "r1", "r3", "c3")},
			inFlight: map[string]int{"c3": 1}, lim: repairLimits{PerNode: 5, Max: 2}, want: []string{"x:r1>c1"}},
		{name: "the channel closest to losing its quorum first",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead", "d/resource/z/dead", "e/resource/z/alive", "f/resource/z/alive", "g/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("w", false, "a", "b", "c", "e", "f"), placed("x", false, "a", "b", "c")},
			lim:      repairLimits{PerNode: 5, Max: 1}, want: []string{"x:c>g"}},
		{name: "dead before draining",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/draining", "d/resource/z/dead", "e/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", false, "a", "b", "c"), placed("y", false, "a", "b", "d")},
			lim:      repairLimits{PerNode: 5, Max: 1}, want: []string{"y:d>e"}},
		{name: "drain moves every replica off the node",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/draining", "d/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", false, "a", "c"), placed("y", false, "c", "b")},
			lim:      noLimits, want: []string{"x:c>d", "y:c>a"}},
		{name: "no eligible node: blocked with the numbers",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead"),
			channels: []fsm.ChannelRecord{placed("x", false, "a", "b", "c")}, lim: noLimits,
			blocked: []string{"x: the channel needs 3 eligible nodes, 2 available (of 3 nodes: 1 excluded)"}},
		{name: "every replica dead",
			nodes:    nodes("a/resource/z/dead", "b/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", false, "a")}, lim: noLimits,
			blocked: []string{"x: every replica (1 of 1) is on a dead node"}},
		{name: "quorum lost",
			nodes:    nodes("a/resource/z/dead", "b/resource/z/dead", "c/resource/z/alive", "d/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", false, "a", "b", "c")}, lim: noLimits,
			blocked: []string{"x: 2 of 3 replicas are on dead nodes: the group has lost its quorum (needs 2)"}},
		{name: "a wiped node's old incarnation is renamed, not moved",
			nodes:    []fsm.NodeRecord{{ID: "a", ServerID: "a@2", State: fsm.NodeAlive}, {ID: "b", ServerID: "b@1", State: fsm.NodeAlive}, {ID: "c", ServerID: "c@1", State: fsm.NodeAlive}, {ID: "d", ServerID: "d@1", State: fsm.NodeAlive}},
			channels: []fsm.ChannelRecord{placed("x", false, "a", "b", "c")}, lim: noLimits},
		{name: "dedicated channel gets a node no channel uses",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead", "d/resource/z/alive", "e/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", true, "a", "b", "c"), placed("y", false, "d")}, lim: noLimits,
			want: []string{"x:c>e"}},
		{name: "dedicated channel with no empty node is blocked",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead", "d/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", true, "a", "b", "c"), placed("y", false, "d")}, lim: noLimits,
			blocked: []string{"x: 1 host other channels"}},
		{name: "other channels never land on a dedicated channel's nodes",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead", "d/resource/z/alive"),
			channels: []fsm.ChannelRecord{placed("x", true, "d"), placed("y", false, "a", "b", "c")}, lim: noLimits,
			blocked: []string{"y: 1 a dedicated channel's"}},
		{name: "pinned channel is not re-placed", nodes: six,
			channels: []fsm.ChannelRecord{pinned(placed("x", false, "r1", "r2", "r3"))}, lim: noLimits,
			blocked: []string{"x: the channel is pinned to nodes r1, r2, r3"}},
		{name: "full nodes are not eligible",
			nodes:    withMax(nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead", "d/resource/z/alive"), "d", 1),
			channels: []fsm.ChannelRecord{placed("x", false, "a", "b", "c"), placed("y", false, "d")}, lim: noLimits,
			blocked: []string{"x: "}},
		{name: "zones the channel is restricted to",
			nodes:    nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/dead", "d/resource/y/alive", "e/resource/z/alive"),
			channels: []fsm.ChannelRecord{zoned(placed("x", false, "a", "b", "c"), "z")}, lim: noLimits,
			want: []string{"x:c>e"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			moves, blocked := planMoves(tc.nodes, tc.channels, tc.busy, tc.inFlight, tc.lim)
			if got := moveStrings(moves); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("moves %v, want %v", got, tc.want)
			}
			if len(blocked) != len(tc.blocked) {
				t.Fatalf("blocked %+v, want %v", blocked, tc.blocked)
			}
			for i, b := range blocked {
				ch, why, _ := strings.Cut(tc.blocked[i], ": ")
				if b.Channel != ch || !strings.Contains(b.Why, why) {
					t.Errorf("blocked %s: %q, want %s: ...%q...", b.Channel, b.Why, ch, why)
				}
			}
		})
	}
}

// A move replaces the one replica in place and is decided from the
// channel's ModifyIndex.
func TestPlanMovesPlacement(t *testing.T) {
	ch := placed("x", false, "a", "b", "c")
	ch.ModifyIndex = 42
	moves, _ := planMoves(nodes("a/resource/z/alive", "b/resource/z/dead", "c/resource/z/alive", "d/resource/z/alive"),
		[]fsm.ChannelRecord{ch}, nil, nil, noLimits)
	if len(moves) != 1 {
		t.Fatalf("moves %v", moves)
	}
	m := moves[0]
	got := []string{}
	for _, r := range m.Placement {
		got = append(got, r.ServerID)
	}
	if m.Expect != 42 || fmt.Sprint(got) != "[a@1 d@1 c@1]" || m.Why != fsm.NodeDead {
		t.Fatalf("move %+v", m)
	}
}

func TestPickReplacementWaits(t *testing.T) {
	_, err := pickReplacement(nodes("a/resource/z/alive", "b/resource/z/alive", "c/resource/z/alive"), nil, placed("x", false, "a", "b"), fsm.Replica{NodeID: "a", ServerID: "a@1"}, func(string) bool { return true })
	if !errors.Is(err, errRepairWait) {
		t.Fatalf("every node full: %v", err)
	}
}

func pinned(c fsm.ChannelRecord) fsm.ChannelRecord {
	for _, r := range c.Placement {
		c.Nodes = append(c.Nodes, r.NodeID)
	}
	return c
}

func zoned(c fsm.ChannelRecord, zones ...string) fsm.ChannelRecord {
	c.Zones = zones
	return c
}

func withMax(ns []fsm.NodeRecord, id string, max int) []fsm.NodeRecord {
	for i := range ns {
		if ns[i].ID == id {
			ns[i].MaxReplicas = max
		}
	}
	return ns
}
