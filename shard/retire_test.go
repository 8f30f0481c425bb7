package shard

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// TestRetireAppliesTheUncommittedTail: a leader that lost its followers
// appends a write it can never commit; retiring it for a quorum-loss
// recovery applies that write too, and a group seeded from the retired
// state holds it and goes on above it.
func TestRetireAppliesTheUncommittedTail(t *testing.T) {
	nodes, reps, leader := startGroup(t, 1)
	put(t, reps[leader], "committed", "c")
	for i := range nodes {
		if i != leader {
			nodes[i].stop(t)
			nodes[i].killed = true
		}
	}
	cmd, err := fsm.Encode(&fsm.Put{Key: []byte("tail"), Value: []byte("t")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = reps[leader].Propose(ctx, cmd)
	cancel()
	if err == nil {
		t.Fatal("a write without a quorum was acknowledged")
	}
	if reps[leader].Raft().LastIndex() <= reps[leader].FSM().Applied() {
		t.Skipf("the leader stepped down before appending the write (%v); nothing uncommitted to recover", err)
	}
	if _, ok, _ := reps[leader].FSM().Get([]byte("tail")); ok {
		t.Fatal("the uncommitted write is applied before the recovery")
	}
	var state bytes.Buffer
	index, term, err := nodes[leader].m.Retire(1, &state)
	if err != nil {
		t.Fatal(err)
	}
	if term == 0 || index == 0 {
		t.Fatalf("retired at index %d, term %d", index, term)
	}
	if _, ok := nodes[leader].m.Replica(1); ok {
		t.Fatal("the retired replica still runs")
	}
	if _, _, err := nodes[leader].m.Retire(1, &bytes.Buffer{}); !errors.Is(err, ErrNotHosted) {
		t.Fatalf("retiring twice: %v", err)
	}

	n := startNode(t, "fresh", t.TempDir(), "127.0.0.1:0")
	t.Cleanup(func() { n.stop(t) })
	r, err := n.m.Seed(ReplicaSpec{GroupID: 2, Channel: "c"}, Seed{Index: index, Term: 1,
		Servers: []raft.Server{{Suffrage: raft.Voter, ID: ServerIDFor(n.id, "1"), Address: n.trans.Addr()}},
		State:   &state})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"committed", "tail"} {
		if _, ok, _ := r.FSM().Get([]byte(k)); !ok {
			t.Fatalf("%s missing from the state seeded from the retired replica", k)
		}
	}
	if res := put(t, r, "after", "a"); res.Index <= index {
		t.Fatalf("write after the recovery at %d, at or below %d", res.Index, index)
	}
}
