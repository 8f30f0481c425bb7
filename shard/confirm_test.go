package shard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/transport"
)

// TestResumedLeaderCountsNoOldAnswers: a leader that, like a paused
// process, finds its followers' answers to messages it sent before a new
// leader was elected must not count them as a confirmation of its
// leadership for a read. The answers to the old leader are held (they wait
// as in the socket of a paused process), its new messages are delayed and
// nothing reaches it from the others, a
// follower stands (as the prober makes it: TimeoutNow, which voters that
// know a leader obey) and takes a write; then a linearizable read starts
// on the old leader and the held answers are handed over. raft's
// VerifyLeader counts them (they arrive after it asked) and confirmed the
// read, which returned the value from before the write; now the read is
// refused or sees the write.
func TestResumedLeaderCountsNoOldAnswers(t *testing.T) {
	timing := RaftTiming{HeartbeatTimeout: 2 * time.Second, ElectionTimeout: 2 * time.Second,
		LeaderLeaseTimeout: 2 * time.Second, CommitTimeout: 50 * time.Millisecond}
	faults := []*transport.Faults{transport.NewFaults(), transport.NewFaults(), transport.NewFaults()}
	for _, f := range faults {
		t.Cleanup(f.Heal)
	}
	nodes, reps, l := startGroupWith(t, 11, timing, nil, faults)
	old, f1, f2 := reps[l], (l+1)%3, (l+2)%3
	put(t, old, "k", "before")
	ctx := context.Background()
	if err := old.ReadBarrier(ctx, Linearizable); err != nil { // this term's barrier, done
		t.Fatal(err)
	}
	addr := func(i int) string { return string(nodes[i].trans.Addr()) }

	hold := time.Now()
	faults[l].Hold(addr(f1))
	faults[l].Hold(addr(f2))
	// Both followers answer a message the old leader sent after the hold:
	// those answers wait, as a paused leader's would.
	waitFor(t, 2*time.Second, func() error {
		for _, f := range []int{f1, f2} {
			if reps[f].Raft().LastContact().Before(hold) {
				return errors.New("a follower has not heard from the leader since the hold")
			}
		}
		return nil
	})
	faults[l].Delay(addr(f1), time.Minute)
	faults[l].Delay(addr(f2), time.Minute)
	// Nor does the new leader reach the old one (a paused process reads
	// nothing).
	faults[f1].Block(addr(l))
	faults[f2].Block(addr(l))

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

	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- old.ReadBarrier(rctx, Linearizable) }()
	time.Sleep(100 * time.Millisecond) // the read's VerifyLeader is waiting
	faults[l].Release(addr(f1))
	faults[l].Release(addr(f2))
	err := <-errc
	if err == nil {
		e, found, err := old.FSM().Get([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if !found || string(e.Value) != "after" {
			t.Fatalf("the old leader confirmed a read that returns %q, not the acknowledged %q", e.Value, "after")
		}
		return
	}
	t.Logf("the old leader refused the read: %v", err)
}
