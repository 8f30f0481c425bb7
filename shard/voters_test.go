package shard

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/transport"
)

// TestLaggingFollowerTakesTheNewVotersAppends: a follower that missed the
// entry adding a voter still takes that voter's AppendEntries once it
// leads, because the meta state places the voter on the channel
// (Config.Placed); before, its voter check refused them for good and it
// never caught up. The added replica starts with an empty configuration
// and takes its leader's first appends the same way. Real transports and
// raft on loopback; the lag is made by cutting the follower off.
func TestLaggingFollowerTakesTheNewVotersAppends(t *testing.T) {
	const gid = 7
	placed := map[string]bool{"n1": true, "n2": true, "n3": true, "n4": true}
	var nodes []*testNode
	var faults []*transport.Faults
	for i := range 4 {
		f := transport.NewFaults()
		tr, err := transport.New(transport.Config{BindAddr: "127.0.0.1:0", ClusterKey: []byte("k"), Logger: hclog.NewNullLogger(), Faults: f})
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("n%d", i+1)
		m, err := Open(Config{DataDir: t.TempDir(), NodeID: id, ServerID: ServerIDFor(id, "1"), Transport: tr, Raft: fastTiming(),
			Placed: func(g uint64, channel, node string) bool { return g == gid && channel == "c" && placed[node] }})
		if err != nil {
			tr.Close()
			t.Fatal(err)
		}
		n := &testNode{id: id, trans: tr, m: m}
		t.Cleanup(func() { n.stop(t) })
		nodes, faults = append(nodes, n), append(faults, f)
	}
	server := func(i int) raft.Server {
		return raft.Server{Suffrage: raft.Voter, ID: ServerIDFor(nodes[i].id, "1"), Address: nodes[i].trans.Addr()}
	}
	reps := make([]*Replica, 4)
	for i := 2; i >= 0; i-- {
		r, err := nodes[i].m.Ensure(ReplicaSpec{GroupID: gid, Channel: "c", Peers: []raft.Server{server(0), server(1), server(2)}})
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = r
	}
	leader := -1
	waitFor(t, 10*time.Second, func() error {
		for i, r := range reps[:3] {
			if r.Raft().State() == raft.Leader {
				leader = i
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	put(t, reps[leader], "before", "1")
	lag := (leader + 1) % 3
	// The lagging follower hears nothing and says nothing.
	for i, f := range faults {
		if i == lag {
			for j := range nodes {
				if j != lag {
					f.Block(string(nodes[j].trans.Addr()))
				}
			}
		} else {
			f.Block(string(nodes[lag].trans.Addr()))
		}
	}
	// The new replica joins empty: the leader adds it.
	r4, err := nodes[3].m.Ensure(ReplicaSpec{GroupID: gid, Channel: "c"})
	if err != nil {
		t.Fatal(err)
	}
	reps[3] = r4
	s4 := server(3)
	if err := reps[leader].Raft().AddVoter(s4.ID, s4.Address, 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("add n4: %v", err)
	}
	put(t, reps[leader], "after", "2")
	waitFor(t, 10*time.Second, func() error {
		if r4.FSM().Applied() < reps[leader].FSM().Applied() {
			return fmt.Errorf("n4 applied %d of %d", r4.FSM().Applied(), reps[leader].FSM().Applied())
		}
		return nil
	})
	if err := reps[leader].Raft().LeadershipTransferToServer(s4.ID, s4.Address).Error(); err != nil {
		t.Fatalf("hand leadership to n4: %v", err)
	}
	waitFor(t, 10*time.Second, func() error {
		if r4.Raft().State() != raft.Leader {
			return fmt.Errorf("n4 is %v", r4.Raft().State())
		}
		return nil
	})
	if servers := reps[lag].Raft().GetConfiguration().Configuration().Servers; len(servers) != 3 {
		t.Fatalf("the lagging follower knows %d servers; the test needs it behind n4's addition", len(servers))
	}
	// The follower hears from everyone again but the old leader, whose
	// replication to it, held while it was cut off, would bring it n4's
	// addition: only n4 may.
	for i, f := range faults {
		if i != leader && i != lag {
			f.Heal()
		}
	}
	faults[lag].Heal()
	faults[lag].Block(string(nodes[leader].trans.Addr()))
	put(t, r4, "led-by-n4", "3")
	waitFor(t, 20*time.Second, func() error {
		if got, want := reps[lag].FSM().Applied(), r4.FSM().Applied(); got < want {
			return fmt.Errorf("the lagging follower applied %d of %d", got, want)
		}
		return nil
	})
	if _, found, err := reps[lag].FSM().Get([]byte("led-by-n4")); err != nil || !found {
		t.Fatalf("the lagging follower lacks n4's write: %v, %v", found, err)
	}
	if servers := reps[lag].Raft().GetConfiguration().Configuration().Servers; len(servers) != 4 {
		t.Fatalf("the lagging follower knows %d servers after catching up, want 4", len(servers))
	}
}
