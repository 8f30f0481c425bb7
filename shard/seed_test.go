package shard

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// bufSink is a raft.SnapshotSink into memory.
type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "test" }
func (*bufSink) Close() error  { return nil }
func (*bufSink) Cancel() error { return nil }

// TestSeededGroupContinuesAboveTheSnapshot: a new group seeded on one
// replica from another group's snapshot, its other replicas started empty,
// elects the seeded replica, sends the others the snapshot, keeps every
// key's indexes, and appends above the snapshot's index.
func TestSeededGroupContinuesAboveTheSnapshot(t *testing.T) {
	_, reps, leader := startGroup(t, 1)
	for i := range 50 {
		put(t, reps[leader], fmt.Sprintf("k%02d", i), "v")
	}
	put(t, reps[leader], "k07", "again")
	snap, err := reps[leader].FSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var state bufSink
	if err := snap.Persist(&state); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	index := reps[leader].FSM().Applied()
	want, _, _ := reps[leader].FSM().Get([]byte("k07"))

	var nodes []*testNode
	var servers []raft.Server
	for i := range 3 {
		n := startNode(t, fmt.Sprintf("s%d", i+1), t.TempDir(), "127.0.0.1:0")
		t.Cleanup(func() { n.stop(t) })
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: ServerIDFor(n.id, "1"), Address: n.trans.Addr()})
	}
	seeded := make([]*Replica, 3)
	for i := 1; i < 3; i++ { // empty: no peers, no bootstrap
		if seeded[i], err = nodes[i].m.Ensure(ReplicaSpec{GroupID: 9, Channel: "c2"}); err != nil {
			t.Fatal(err)
		}
	}
	// A snapshot at another index than claimed is refused, and leaves
	// nothing that a correct seed would trip on.
	if _, err := nodes[0].m.Seed(ReplicaSpec{GroupID: 9, Channel: "c2"},
		Seed{Index: index + 1, Term: 1, Servers: servers, State: bytes.NewReader(state.Bytes())}); err == nil {
		t.Fatal("a seed at the wrong index was accepted")
	}
	if seeded[0], err = nodes[0].m.Seed(ReplicaSpec{GroupID: 9, Channel: "c2"},
		Seed{Index: index, Term: 1, Servers: servers, State: bytes.NewReader(state.Bytes())}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		for i, r := range seeded {
			if r.FSM().Applied() < index {
				return fmt.Errorf("replica %d applied %d, the seed is at %d", i, r.FSM().Applied(), index)
			}
			got, ok, err := r.FSM().Get([]byte("k07"))
			if err != nil || !ok || got.CreateIndex != want.CreateIndex || got.ModifyIndex != want.ModifyIndex || string(got.Value) != "again" {
				return fmt.Errorf("replica %d: k07 %+v (%v), want %+v", i, got, err, want)
			}
		}
		if seeded[0].Raft().State() != raft.Leader {
			return errors.New("the seeded replica does not lead")
		}
		return nil
	})
	res := put(t, seeded[0], "new", "n")
	if res.Index <= index {
		t.Fatalf("a write to the seeded group got index %d, at or below the seed's %d", res.Index, index)
	}
	if _, err := nodes[1].m.Seed(ReplicaSpec{GroupID: 10, Channel: "c3"},
		Seed{Index: index, Term: 1, Servers: servers, State: bytes.NewReader([]byte("short"))}); err == nil {
		t.Fatal("a seed from a stream that is not a snapshot was accepted")
	}
	if r, err := nodes[1].m.Seed(ReplicaSpec{GroupID: 9, Channel: "c2"},
		Seed{Index: index, Term: 1, Servers: servers, State: bytes.NewReader(state.Bytes())}); err != nil || r != seeded[1] {
		t.Fatalf("seeding a running replica: %v, %v; want the running replica", r, err)
	}
}
