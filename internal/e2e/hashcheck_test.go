package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestCorruptReplicaIsNoticed: a value changed in one replica's state DB
// under its state machine (no log entry, as a disk returning other bytes
// would) is noticed by the next hash check; the replica is marked corrupt
// (logged, counted, shown in the channel's description, kept across a
// restart), and no read through its node answers the wrong value again:
// the node forwards it to the leader. The operator's repair rebuilds it from
// the leader's state, after which it passes the checks and serves again.
func TestCorruptReplicaIsNoticed(t *testing.T) {
	const every = 300 * time.Millisecond
	c := testcluster.New(t, testcluster.Options{Core: 3, HashCheckInterval: every})
	c.CreateChannel("hc", 3)
	leader := c.Index(c.WaitLeader("hc"))
	bad := (leader + 1) % 3
	ctx := ctxT(t)
	for i := range 20 {
		if _, err := c.Client(leader).Put(ctx, "hc", fmt.Sprintf("k%02d", i), fmt.Appendf(nil, "v%02d", i), api.PutOptions{}); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	c.WaitFor(10*time.Second, func() error {
		for i := range 3 {
			if _, ok, err := replicaOf(t, c, i, "hc").FSM().Get([]byte("k19")); !ok || err != nil {
				return fmt.Errorf("%s has not applied the writes yet (%v)", c.Nodes[i].Name, err)
			}
		}
		return nil
	})
	// Sound replicas pass their checks.
	c.WaitFor(10*time.Second, func() error {
		if v := metric(t, c, bad, `shardnet_shard_hash_compares_total{outcome="agree"}`); v < 1 {
			return errors.New("no hash comparison agreed yet")
		}
		return nil
	})

	rep := replicaOf(t, c, bad, "hc")
	if err := rep.FSM().OverwriteForTest([]byte("k07"), []byte("wrong")); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := rep.FSM().Get([]byte("k07")); string(e.Value) != "wrong" {
		t.Fatalf("the corrupted replica reads %q", e.Value)
	}
	start := time.Now()
	c.WaitFor(10*time.Second, func() error {
		if rep.Corrupt() == nil {
			return errors.New("the corrupt replica is not marked yet")
		}
		return nil
	})
	t.Logf("noticed %v after the corruption (hash checks every %v)", time.Since(start).Round(time.Millisecond), every)
	for i := range 3 {
		if i != bad && replicaOf(t, c, i, "hc").Corrupt() != nil {
			t.Fatalf("the sound replica on %s was marked corrupt", c.Nodes[i].Name)
		}
	}
	if v := metric(t, c, bad, "shardnet_shard_replica_hash_mismatches_total"); v != 1 {
		t.Fatalf("replica_hash_mismatches_total = %v on the corrupt replica's node, want 1", v)
	}

	readsRight := func() {
		t.Helper()
		for _, level := range []api.Consistency{api.Stale, api.Linearizable} {
			if v, err := getString(c, bad, "hc", "k07", level, 5*time.Second); err != nil || v != "v07" {
				t.Fatalf("%s read through the corrupt replica's node: %q, %v", level, v, err)
			}
		}
		l, err := c.Client(bad).List(ctx, "hc", "k0", "", 100, api.Stale)
		if err != nil || len(l.Items) != 10 || string(l.Items[7].Value) != "v07" {
			t.Fatalf("stale list through the corrupt replica's node: %+v, %v", l, err)
		}
	}
	readsRight()
	if _, err := c.Client(bad).Put(ctx, "hc", "after", []byte("x"), api.PutOptions{}); err != nil {
		t.Fatalf("a write through the corrupt replica's node: %v", err)
	}

	ch, err := c.Client(leader).Channel(ctx, "hc")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ch.Placement {
		wantBad := r.NodeID == c.Nodes[bad].Name
		if r.HashMismatch != wantBad || (wantBad && (r.Healthy || r.HashMismatchIndex == 0)) {
			t.Fatalf("placement of %s: %+v", r.NodeID, r)
		}
	}
	if ch.Health != "degraded" {
		t.Fatalf("channel health %q with a corrupt replica, want degraded", ch.Health)
	}

	// The mark is on disk: after a restart the replica still serves nothing.
	c.Stop(bad)
	c.Start(bad)
	if replicaOf(t, c, bad, "hc").Corrupt() == nil {
		t.Fatal("the corrupt mark did not survive a restart")
	}
	c.WaitFor(10*time.Second, func() error {
		_, err := getString(c, bad, "hc", "k07", api.Stale, 2*time.Second)
		return err
	})
	readsRight()

	// The operator's repair, sent to another node: a call to the corrupt
	// replica's node, which rebuilds it from the leader's state, streamed
	// to it as the answer of a call of its own (cluster/route.go).
	other := (bad + 2) % 3
	snapshots := func() float64 {
		return metric(t, c, 0, `shardnet_cluster_calls_served_total{call="snapshot"}`) +
			metric(t, c, 1, `shardnet_cluster_calls_served_total{call="snapshot"}`) +
			metric(t, c, 2, `shardnet_cluster_calls_served_total{call="snapshot"}`)
	}
	snapshotsBefore := snapshots()
	res, err := c.Client(other).RepairReplica(ctx, "hc", c.Nodes[bad].Name)
	if err != nil || res.Node != c.Nodes[bad].Name || res.Applied == 0 {
		t.Fatalf("repair: %+v, %v", res, err)
	}
	if got := metric(t, c, bad, `shardnet_cluster_calls_served_total{call="repair"}`); got != 1 {
		t.Errorf("the corrupt replica's node served %v repair calls, want 1", got)
	}
	if got := metric(t, c, bad, `shardnet_cluster_calls_total{call="snapshot",outcome="ok"}`); got < 1 || snapshots()-snapshotsBefore != got {
		t.Errorf("the corrupt replica's node got %v snapshot streams; %v were served", got, snapshots()-snapshotsBefore)
	}
	rep = replicaOf(t, c, bad, "hc")
	if rep.Corrupt() != nil {
		t.Fatal("the replica is still marked corrupt after its repair")
	}
	if e, _, _ := rep.FSM().Get([]byte("k07")); string(e.Value) != "v07" {
		t.Fatalf("the repaired replica reads %q", e.Value)
	}
	agreed := metric(t, c, bad, `shardnet_shard_hash_compares_total{outcome="agree"}`)
	c.WaitFor(10*time.Second, func() error {
		if metric(t, c, bad, `shardnet_shard_hash_compares_total{outcome="agree"}`) < agreed+2 {
			return errors.New("the repaired replica has not passed two more hash checks yet")
		}
		return nil
	})
	// (A comparison of a check before the repair may still count as a
	// mismatch as the repair ends; it marks nothing.)
	if rep.Corrupt() != nil {
		t.Fatal("the repaired replica was marked corrupt again")
	}
	readsRight()
	if _, err := c.Client(bad).RepairReplica(ctx, "hc", c.Nodes[bad].Name); api.AsError(err) == nil || api.AsError(err).Code != api.CodeNotCorrupt {
		t.Fatalf("repair of a sound replica: %v, want %s", err, api.CodeNotCorrupt)
	}
}

// TestCorruptLeaderHandsOver: a leader whose state a hash check finds wrong
// hands its leadership to a sound replica and never gets it back from the
// leader rebalancer (it would answer writes' CAS and gets from its own
// state); reads and writes through its node are served by the new leader.
func TestCorruptLeaderHandsOver(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, HashCheckInterval: 300 * time.Millisecond, LeaderRebalance: 500 * time.Millisecond})
	c.CreateChannel("hl", 3)
	bad := c.Index(c.WaitLeader("hl"))
	ctx := ctxT(t)
	if _, err := c.Client(bad).Put(ctx, "hl", "k", []byte("right"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, func() error {
		for i := range 3 {
			if _, ok, _ := replicaOf(t, c, i, "hl").FSM().Get([]byte("k")); !ok {
				return fmt.Errorf("%s has not applied the write", c.Nodes[i].Name)
			}
		}
		return nil
	})
	rep := replicaOf(t, c, bad, "hl")
	if err := rep.FSM().OverwriteForTest([]byte("k"), []byte("wrong")); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, func() error {
		if rep.Corrupt() == nil {
			return errors.New("not marked yet")
		}
		if l := c.WaitLeader("hl"); l == c.Nodes[bad].Name {
			return errors.New("the corrupt replica still leads")
		}
		return nil
	})
	// Over several rebalance passes the leadership never comes back.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if rep.Raft().State().String() == "Leader" {
			t.Fatal("the corrupt replica leads again")
		}
		for _, level := range []api.Consistency{api.Stale, api.Linearizable} {
			if v, err := getString(c, bad, "hl", "k", level, 5*time.Second); err != nil || v != "right" {
				t.Fatalf("%s read through the corrupt replica's node: %q, %v", level, v, err)
			}
		}
	}
	if _, err := c.Client(bad).Put(ctx, "hl", "k2", []byte("x"), api.PutOptions{}); err != nil {
		t.Fatalf("a write through the corrupt replica's node: %v", err)
	}
}

// TestCorruptMetaCopyIsNoticed: a node whose copy of the meta state was
// changed outside the meta log (a voter, and a resource node that follows
// the meta state by watch) is noticed by the next meta hash check and
// answers not ready from then on; the sound nodes stay ready.
func TestCorruptMetaCopyIsNoticed(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1, HashCheckInterval: 300 * time.Millisecond})
	ctx := ctxT(t)
	waitWatching(t, c)
	agreed := metric(t, c, 3, `shardnet_cluster_meta_hash_compares_total{outcome="agree"}`)
	voter := 0
	for i := range 3 {
		if !c.Nodes[i].Agent().Node.IsMetaLeader() {
			voter = i
			break
		}
	}
	bad := []int{voter, 3}
	// Sound copies pass their checks first.
	c.WaitFor(10*time.Second, func() error {
		for i := range c.Nodes {
			if metric(t, c, i, `shardnet_cluster_meta_hash_compares_total{outcome="agree"}`) < 1 {
				return fmt.Errorf("%s has not passed a meta hash check yet", c.Nodes[i].Name)
			}
			if i == 3 && metric(t, c, i, `shardnet_cluster_meta_hash_compares_total{outcome="agree"}`) <= agreed {
				return fmt.Errorf("%s has not passed a meta hash check fed by watch yet", c.Nodes[i].Name)
			}
		}
		return nil
	})
	for _, i := range bad {
		if !c.Nodes[i].Agent().Node.Meta().SetZoneForTest(c.Nodes[0].Name, "elsewhere") {
			t.Fatalf("%s does not know %s", c.Nodes[i].Name, c.Nodes[0].Name)
		}
	}
	c.WaitFor(10*time.Second, func() error {
		for _, i := range bad {
			if err := c.Client(i).Health(ctx, true); api.AsError(err) == nil || api.AsError(err).Code != api.CodeNotReady {
				return fmt.Errorf("%s: ready check %v", c.Nodes[i].Name, err)
			}
		}
		return nil
	})
	// Nor does its reconciler act on it: a channel placed on a flagged
	// node (through a sound one) gets no replica there.
	sound := (voter + 1) % 3
	if _, err := c.Client(sound).CreateChannel(ctx, api.CreateChannelRequest{Name: "late", Replicas: 1, Nodes: []string{c.Nodes[3].Name}}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, func() error {
		if _, ok := c.Nodes[3].Agent().Node.Meta().Channel("late"); !ok {
			return errors.New("the flagged node's copy has not applied the new channel yet")
		}
		return nil
	})
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, ok := c.Nodes[3].Agent().Node.Shards().ReplicaByChannel("late"); ok {
			t.Fatalf("%s started a replica from the copy a hash check found different", c.Nodes[3].Name)
		}
	}
	// Nothing is answered from a copy found different: not the node list,
	// not a channel's description, not a channel's data.
	for _, i := range bad {
		if _, err := c.Client(i).Nodes(ctx); api.AsError(err) == nil || api.AsError(err).Code != api.CodeNotReady {
			t.Errorf("%s answered the node list from its flagged copy: %v", c.Nodes[i].Name, err)
		}
		if _, err := c.Client(i).Channels(ctx); api.AsError(err) == nil || api.AsError(err).Code != api.CodeNotReady {
			t.Errorf("%s answered the channel list from its flagged copy: %v", c.Nodes[i].Name, err)
		}
	}
	for i := range c.Nodes {
		want := 0.0
		if i == bad[0] || i == bad[1] {
			want = 1
		} else if err := c.Client(i).Health(ctx, true); err != nil {
			t.Fatalf("the sound node %s is not ready: %v", c.Nodes[i].Name, err)
		}
		if v := metric(t, c, i, "shardnet_cluster_meta_hash_mismatches_total"); v != want {
			t.Fatalf("%s: meta_hash_mismatches_total = %v, want %v", c.Nodes[i].Name, v, want)
		}
	}
}
