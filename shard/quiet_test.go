package shard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/transport"
)

// TestQuietLeaderCutOffServesNoRead: the leader of an idle group whose
// empty appends its transport answers itself (quiet appends) is cut off
// from its followers; a follower takes over and acknowledges a write. For
// up to a second the cut-off leader's transport still answers its appends
// as its followers last did, and raft's VerifyLeader counts those answers;
// a linearizable read on it must still be refused or see the write, never
// confirmed by answers that did not cross the wire.
func TestQuietLeaderCutOffServesNoRead(t *testing.T) {
	// Heartbeats every 200-400 ms keep the followers' real answers fresh;
	// an empty append every 20-40 ms, nearly all of them answered locally.
	timing := RaftTiming{HeartbeatTimeout: 2 * time.Second, ElectionTimeout: 2 * time.Second,
		LeaderLeaseTimeout: 2 * time.Second, CommitTimeout: 20 * time.Millisecond}
	faults := []*transport.Faults{transport.NewFaults(), transport.NewFaults(), transport.NewFaults()}
	for _, f := range faults {
		t.Cleanup(f.Heal)
	}
	nodes, reps, l := startGroupWith(t, 12, timing, nil, faults)
	old, f1, f2 := reps[l], (l+1)%3, (l+2)%3
	put(t, old, "k", "before")
	ctx := context.Background()
	if err := old.ReadBarrier(ctx, Linearizable); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if nodes[l].trans.QuietAppends() < 5 {
			return errors.New("the idle group's appends are not answered locally yet")
		}
		return nil
	})
	addr := func(i int) string { return string(nodes[i].trans.Addr()) }

	// Cut off: the followers' answers to the old leader wait (Hold), its
	// new messages are delayed, and nothing of the others reaches it.
	faults[l].Hold(addr(f1))
	faults[l].Hold(addr(f2))
	faults[l].Delay(addr(f1), time.Minute)
	faults[l].Delay(addr(f2), time.Minute)
	faults[f1].Block(addr(l))
	faults[f2].Block(addr(l))
	cut := nodes[l].trans.QuietAppends()

	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax,
		ID: []byte(old.serverID), Addr: []byte(addr(l))}}
	if _, err := reps[f1].trans.DeliverLocal(req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() error {
		if reps[f1].Raft().State() != raft.Leader {
			return errors.New("the follower has not taken over")
		}
		return nil
	})
	put(t, reps[f1], "k", "after")
	if old.Raft().State() != raft.Leader {
		t.Skip("the old leader stepped down before the read (a slow machine): nothing to test")
	}

	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := old.ReadBarrier(rctx, Linearizable)
	if nodes[l].trans.QuietAppends() == cut {
		t.Fatal("no append was answered locally while the leader was cut off: the test did not test quiet appends")
	}
	if err == nil {
		e, found, err := old.FSM().Get([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if !found || string(e.Value) != "after" {
			t.Fatalf("the cut-off leader confirmed a read that returns %q, not the acknowledged %q", e.Value, "after")
		}
		return
	}
	t.Logf("the cut-off leader refused the read: %v", err)
}
