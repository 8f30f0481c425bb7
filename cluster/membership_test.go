package cluster

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// The convergence decision, rule by rule (nextMemberStep's doc comment).
func TestNextMemberStep(t *testing.T) {
	v := func(id string) raft.Server {
		return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":1"), Suffrage: raft.Voter}
	}
	nv := func(id string) raft.Server {
		s := v(id)
		s.Suffrage = raft.Nonvoter
		return s
	}
	placed := func(ids ...string) []fsm.Replica {
		var out []fsm.Replica
		for _, id := range ids {
			out = append(out, fsm.Replica{NodeID: id[:1], ServerID: id})
		}
		return out
	}
	// Nodes a..f, each in its first incarnation ("a@1") unless a case says.
	current := func(over ...string) map[string]raft.ServerID {
		m := map[string]raft.ServerID{}
		for _, n := range "abcdef" {
			m[string(n)] = raft.ServerID(string(n) + "@1")
		}
		for _, id := range over {
			m[id[:1]] = raft.ServerID(id)
		}
		return m
	}
	addrs := map[string]raft.ServerAddress{}
	for _, n := range "abcdef" {
		addrs[string(n)] = raft.ServerAddress(string(n) + ":1")
	}
	for _, c := range []struct {
		name      string
		self      string
		servers   []raft.Server
		placement []fsm.Replica
		current   map[string]raft.ServerID
		caughtUp  []string
		want      memberStep
	}{
		{name: "converged", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1")}, placement: placed("a@1", "b@1", "c@1"),
			want: memberStep{}},
		{name: "scale up: add a missing placed server as a non-voter", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1")}, placement: placed("a@1", "b@1", "c@1", "d@1", "e@1"),
			want: memberStep{Op: memberAddNonvoter, Server: "d@1", Addr: "d:1"}},
		{name: "a non-voter not caught up waits", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), nv("d@1")}, placement: placed("a@1", "b@1", "c@1", "d@1"),
			want: memberStep{}},
		{name: "a caught-up placed non-voter is promoted", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), nv("d@1")}, placement: placed("a@1", "b@1", "c@1", "d@1"),
			caughtUp: []string{"d@1"},
			want:     memberStep{Op: memberPromote, Server: "d@1", Addr: "d@1:1"}},
		{name: "adding comes before promoting", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), nv("d@1")}, placement: placed("a@1", "b@1", "c@1", "d@1", "e@1"),
			caughtUp: []string{"d@1"},
			want:     memberStep{Op: memberAddNonvoter, Server: "e@1", Addr: "e:1"}},
		{name: "replacement: the replaced voter stays until its replacement votes", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), nv("d@1")}, placement: placed("a@1", "b@1", "d@1"),
			want: memberStep{}},
		{name: "replacement: then it goes", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), v("d@1")}, placement: placed("a@1", "b@1", "d@1"),
			want: memberStep{Op: memberRemove, Server: "c@1"}},
		{name: "scale down: a voter goes once every placed server votes", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), v("d@1"), v("e@1")}, placement: placed("a@1", "b@1", "c@1"),
			want: memberStep{Op: memberRemove, Server: "d@1"}},
		{name: "an unplaced non-voter goes at once", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), nv("d@1"), nv("e@1")}, placement: placed("a@1", "b@1", "c@1", "e@1"),
			want: memberStep{Op: memberRemove, Server: "d@1"}},
		{name: "the unplaced leader hands its leadership to a placed voter", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), v("d@1")}, placement: placed("b@1", "c@1", "d@1"),
			want: memberStep{Op: memberTransfer, Server: "b@1", Addr: "b@1:1"}},
		{name: "the hand-over prefers a placed voter known caught up", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), v("d@1")}, placement: placed("b@1", "c@1", "d@1"),
			caughtUp: []string{"c@1"},
			want:     memberStep{Op: memberTransfer, Server: "c@1", Addr: "c@1:1"}},
		{name: "a leader the placement dropped hands over before a replacement is added (it takes RPCs only from placed nodes)", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1")}, placement: placed("b@1", "c@1", "d@1"),
			caughtUp: []string{"c@1"},
			want:     memberStep{Op: memberTransfer, Server: "c@1", Addr: "c@1:1"}},
		{name: "another unplaced voter goes before the leader hands over", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), v("d@1"), v("e@1")}, placement: placed("b@1", "c@1", "d@1"),
			want: memberStep{Op: memberRemove, Server: "e@1"}},
		{name: "a wiped node's old incarnation goes at once, even a voter, before any add", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1")}, placement: placed("a@1", "b@1", "c@2"),
			current: current("c@2"),
			want:    memberStep{Op: memberRemove, Server: "c@1"}},
		{name: "then its new incarnation is added", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1")}, placement: placed("a@1", "b@1", "c@2"),
			current: current("c@2"),
			want:    memberStep{Op: memberAddNonvoter, Server: "c@2", Addr: "c:1"}},
		{name: "a placement naming an old incarnation adds nothing until renewed", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1")}, placement: placed("a@1", "b@1", "c@1"),
			current: current("c@2"),
			want:    memberStep{}},
		{name: "a placed node missing from the registry is not added", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1")}, placement: placed("a@1", "b@1", "c@1", "f@1"),
			current: func() map[string]raft.ServerID { m := current(); delete(m, "f"); return m }(),
			want:    memberStep{}},
		{name: "scale down with a dead unplaced voter: it goes like any other", self: "a@1",
			servers: []raft.Server{v("a@1"), v("b@1"), v("c@1"), v("d@1"), v("e@1")}, placement: placed("a@1", "b@1", "c@1", "d@1"),
			want: memberStep{Op: memberRemove, Server: "e@1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cur := c.current
			if cur == nil {
				cur = current()
			}
			up := map[raft.ServerID]bool{}
			for _, id := range c.caughtUp {
				up[raft.ServerID(id)] = true
			}
			got := nextMemberStep(memberView{Self: raft.ServerID(c.self), Servers: c.servers, Placement: c.placement,
				Current: cur, Addr: addrs, CaughtUp: up})
			got.Why = ""
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// Applying the decisions one after the other reaches the placement from
// any of these starts, and the voters never drop below a majority of the
// placed servers that already voted (add before remove).
func TestNextMemberStepConverges(t *testing.T) {
	placement := []fsm.Replica{{NodeID: "b", ServerID: "b@1"}, {NodeID: "c", ServerID: "c@2"}, {NodeID: "d", ServerID: "d@1"}, {NodeID: "e", ServerID: "e@1"}, {NodeID: "f", ServerID: "f@1"}}
	cur := map[string]raft.ServerID{"a": "a@1", "b": "b@1", "c": "c@2", "d": "d@1", "e": "e@1", "f": "f@1"}
	addr := map[string]raft.ServerAddress{"a": "a", "b": "b", "c": "c", "d": "d", "e": "e", "f": "f"}
	servers := []raft.Server{{ID: "a@1", Suffrage: raft.Voter}, {ID: "b@1", Suffrage: raft.Voter}, {ID: "c@1", Suffrage: raft.Voter}}
	self := raft.ServerID("a@1")
	for i := 0; i < 30; i++ {
		up := map[raft.ServerID]bool{}
		for _, s := range servers {
			up[s.ID] = true // every non-voter catches up at once here
		}
		st := nextMemberStep(memberView{Self: self, Servers: servers, Placement: placement, Current: cur, Addr: addr, CaughtUp: up})
		switch st.Op {
		case memberNone:
			if len(servers) != len(placement) {
				t.Fatalf("stopped at %v", servers)
			}
			for _, s := range servers {
				if s.Suffrage != raft.Voter {
					t.Fatalf("stopped with a non-voter: %v", servers)
				}
			}
			return
		case memberAddNonvoter:
			servers = append(servers, raft.Server{ID: st.Server, Suffrage: raft.Nonvoter})
		case memberPromote:
			for i := range servers {
				if servers[i].ID == st.Server {
					servers[i].Suffrage = raft.Voter
				}
			}
		case memberRemove:
			for i := range servers {
				if servers[i].ID == st.Server {
					servers = append(servers[:i], servers[i+1:]...)
					break
				}
			}
		case memberTransfer:
			self = st.Server
		}
	}
	t.Fatalf("did not converge: %v", servers)
}

// Scaling chooses nodes by the creation rules and drops the right ones.
func TestRescale(t *testing.T) {
	nodes := []fsm.NodeRecord{
		{ID: "a", ServerID: "a@1", Zone: "z1", State: fsm.NodeAlive},
		{ID: "b", ServerID: "b@1", Zone: "z2", State: fsm.NodeAlive},
		{ID: "c", ServerID: "c@1", Zone: "z3", State: fsm.NodeAlive},
		{ID: "d", ServerID: "d@1", Zone: "z1", State: fsm.NodeAlive},
		{ID: "e", ServerID: "e@1", Zone: "z2", State: fsm.NodeDead},
		{ID: "f", ServerID: "f@1", Zone: "z3", State: fsm.NodeAlive},
	}
	ch := fsm.ChannelRecord{Name: "x", Placement: []fsm.Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "c", ServerID: "c@1"}}}
	channels := []fsm.ChannelRecord{ch}
	five, err := rescale(nodes, channels, ch, 5, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeIDs(five); len(got) != 5 || got[0] != "a" || got[1] != "b" || got[2] != "c" || !slices.Contains(got, "d") || !slices.Contains(got, "f") {
		t.Fatalf("scaled to five: %v (the dead e must not be chosen)", got)
	}
	if _, err := rescale(nodes, channels, ch, 6, "a"); err == nil {
		t.Fatal("six replicas on five alive nodes")
	} else if want := `channel "x" needs 6 replicas, 3 placed: 3 more wanted, 2 eligible nodes`; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	// Back to three from a, b, c, d (z1 twice), f, led by d: d shares
	// z1 but leads, so a goes; then one of b, c, f... f was added last.
	ch.Placement = []fsm.Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "c", ServerID: "c@1"},
		{NodeID: "d", ServerID: "d@1", Added: 10}, {NodeID: "f", ServerID: "f@1", Added: 10}}
	three, err := rescale(nodes, channels, ch, 3, "d")
	if err != nil {
		t.Fatal(err)
	}
	zones := map[string]bool{}
	for _, r := range three {
		nd := nodes[int(r.NodeID[0]-'a')]
		zones[nd.Zone] = true
	}
	if len(three) != 3 || len(zones) != 3 || !slices.Contains(nodeIDs(three), "d") {
		t.Fatalf("scaled to three: %v: want three zones and the leader d kept", nodeIDs(three))
	}
	// A dead replica goes first.
	ch.Placement = []fsm.Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "e", ServerID: "e@1"}}
	two, _ := rescale(nodes, channels, ch, 2, "a")
	if slices.Contains(nodeIDs(two), "e") {
		t.Fatalf("scaled to two: %v kept the dead node", nodeIDs(two))
	}
	// Operators spread as zones do: one zone, five nodes of which p, q, r
	// run two each; back to three keeps three operators, whatever was
	// added last.
	ops := []fsm.NodeRecord{
		{ID: "p1", ServerID: "p1@1", Zone: "z", Operator: "p", State: fsm.NodeAlive},
		{ID: "p2", ServerID: "p2@1", Zone: "z", Operator: "p", State: fsm.NodeAlive},
		{ID: "q1", ServerID: "q1@1", Zone: "z", Operator: "q", State: fsm.NodeAlive},
		{ID: "q2", ServerID: "q2@1", Zone: "z", Operator: "q", State: fsm.NodeAlive},
		{ID: "r1", ServerID: "r1@1", Zone: "z", Operator: "r", State: fsm.NodeAlive},
	}
	ch.Placement = []fsm.Replica{{NodeID: "p1", ServerID: "p1@1"}, {NodeID: "q1", ServerID: "q1@1"}, {NodeID: "r1", ServerID: "r1@1", Added: 20},
		{NodeID: "p2", ServerID: "p2@1", Added: 10}, {NodeID: "q2", ServerID: "q2@1", Added: 10}}
	kept, err := rescale(ops, []fsm.ChannelRecord{ch}, ch, 3, "p1")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range kept {
		seen[r.NodeID[:1]] = true
	}
	if len(kept) != 3 || len(seen) != 3 {
		t.Fatalf("scaled to three: %v: want three operators (the last added, r1, is the only one of its operator)", nodeIDs(kept))
	}
}

// Only a creation replica bootstraps, always with the creation placement;
// an added replica joins; a placement naming another incarnation of this
// node starts nothing.
func TestReplicaSpec(t *testing.T) {
	m := fsm.NewMeta()
	idx := uint64(0)
	apply := func(c fsm.MetaCommand) *fsm.MetaResult {
		t.Helper()
		b, err := fsm.EncodeMeta(c)
		if err != nil {
			t.Fatal(err)
		}
		idx++
		return m.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(*fsm.MetaResult)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		apply(&fsm.UpsertNode{Node: fsm.NodeRecord{ID: id, ServerID: id + "@1", ClusterAddr: id + ":1"}})
	}
	abc := []fsm.Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "c", ServerID: "c@1"}}
	apply(&fsm.CreateChannel{Channel: fsm.ChannelRecord{Name: "x", Replicas: 3, Placement: abc}})
	spec := func(node string) ([]raft.ServerID, bool) {
		t.Helper()
		n := &Node{serverID: raft.ServerID(node + "@1"), meta: &metaGroup{fsm: m}}
		ch, _ := m.Channel("x")
		r, ok := placedReplica(ch, node)
		if !ok {
			return nil, false
		}
		s, ok := n.replicaSpec(ch, r)
		var ids []raft.ServerID
		for _, p := range s.Peers {
			if p.Suffrage != raft.Voter {
				t.Fatalf("bootstrap server %v is not a voter", p)
			}
			ids = append(ids, p.ID)
		}
		return ids, ok
	}
	want := []raft.ServerID{"a@1", "b@1", "c@1"}
	if got, ok := spec("a"); !ok || !slices.Equal(got, want) {
		t.Fatalf("creation replica a: bootstrap %v (%v), want %v", got, ok, want)
	}
	// c is replaced by d, and the channel scaled to four with c back.
	ch, _ := m.Channel("x")
	if r := apply(&fsm.SetPlacement{Channel: "x", Placement: []fsm.Replica{abc[0], abc[1], {NodeID: "d", ServerID: "d@1"}}, Expect: ch.ModifyIndex}); r.Err != nil {
		t.Fatal(r.Err)
	}
	ch, _ = m.Channel("x")
	if r := apply(&fsm.SetPlacement{Channel: "x", Placement: append(slices.Clone(ch.Placement), abc[2]), Expect: ch.ModifyIndex}); r.Err != nil {
		t.Fatal(r.Err)
	}
	// b, a creation replica that never started yet, still bootstraps the
	// creation placement, not the current one.
	if got, ok := spec("b"); !ok || !slices.Equal(got, want) {
		t.Fatalf("late creation replica b: bootstrap %v (%v), want %v", got, ok, want)
	}
	for _, node := range []string{"c", "d"} {
		if got, ok := spec(node); !ok || got != nil {
			t.Fatalf("added replica %s: bootstrap %v (%v), want to join", node, got, ok)
		}
	}
	// Node a wiped: it runs as a@2 while the placement still names a@1.
	n := &Node{serverID: "a@2", meta: &metaGroup{fsm: m}}
	ch, _ = m.Channel("x")
	if _, ok := n.replicaSpec(ch, ch.Placement[0]); ok {
		t.Fatal("a new incarnation started the replica placed for its old one")
	}
}
