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
	g := startFaultyGroup(t, 11, timing)
	reps, faults, l, f1, f2, addr := g.reps, g.faults, g.l, g.f1, g.f2, g.addr
	old := reps[l]
	ctx := context.Background()

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

	g.takeOver(t)

	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- old.ReadBarrier(rctx, Linearizable) }()
	time.Sleep(100 * time.Millisecond) // the read's VerifyLeader is waiting
	faults[l].Release(addr(f1))
	faults[l].Release(addr(f2))
	g.checkRead(t, <-errc)
}

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
	g := startFaultyGroup(t, 12, timing)
	nodes, l := g.nodes, g.l
	old := g.reps[l]
	waitFor(t, 5*time.Second, func() error {
		if nodes[l].trans.QuietAppends() < 5 {
			return errors.New("the idle group's appends are not answered locally yet")
		}
		return nil
	})

	g.cutOff()
	cut := nodes[l].trans.QuietAppends()

	g.takeOver(t)

	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := old.ReadBarrier(rctx, Linearizable)
	if nodes[l].trans.QuietAppends() == cut {
		t.Fatal("no append was answered locally while the leader was cut off: the test did not test quiet appends")
	}
	g.checkRead(t, err)
}

// TestQuietHeartbeatsLeaderCutOffServesNoRead: as above, with the
// heartbeats of the idle group answered locally too (quiet heartbeats,
// once its term has run 10 s): cut off, the old leader's transport goes on
// answering its heartbeats for as long as the probes of its followers'
// nodes last, and raft's VerifyLeader would count those answers; its
// linearizable read must still be refused or see the new leader's write.
func TestQuietHeartbeatsLeaderCutOffServesNoRead(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a term to run 10 s")
	}
	timing := RaftTiming{HeartbeatTimeout: 2 * time.Second, ElectionTimeout: 2 * time.Second,
		LeaderLeaseTimeout: 2 * time.Second, CommitTimeout: 20 * time.Millisecond}
	g := startFaultyGroup(t, 13, timing)
	// The leader may move to the placement's first replica meanwhile (the
	// rebalancer): wait for a leader whose heartbeats are answered locally,
	// whichever it is.
	waitFor(t, 30*time.Second, func() error {
		for i, r := range g.reps {
			if r.Raft().State() == raft.Leader && g.nodes[i].trans.QuietHeartbeats() >= 5 {
				g.l, g.f1, g.f2 = i, (i+1)%3, (i+2)%3
				return nil
			}
		}
		return errors.New("no leader's heartbeats are answered locally yet")
	})
	old := g.reps[g.l]
	g.cutOff()

	g.takeOver(t)

	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	g.checkRead(t, old.ReadBarrier(rctx, Linearizable))
}

// faultyGroup is a group of three replicas on nodes whose transports take
// faults, its leader l having acknowledged k=before and confirmed a read.
type faultyGroup struct {
	nodes  []*testNode
	reps   []*Replica
	faults []*transport.Faults
	l      int
	f1, f2 int
	addr   func(i int) string
}

func startFaultyGroup(t *testing.T, gid uint64, timing RaftTiming) *faultyGroup {
	t.Helper()
	faults := []*transport.Faults{transport.NewFaults(), transport.NewFaults(), transport.NewFaults()}
	for _, f := range faults {
		t.Cleanup(f.Heal)
	}
	nodes, reps, l := startGroupWith(t, gid, timing, nil, faults)
	g := &faultyGroup{nodes: nodes, reps: reps, faults: faults, l: l, f1: (l + 1) % 3, f2: (l + 2) % 3,
		addr: func(i int) string { return string(nodes[i].trans.Addr()) }}
	put(t, reps[l], "k", "before")
	if err := reps[l].ReadBarrier(context.Background(), Linearizable); err != nil { // this term's barrier, done
		t.Fatal(err)
	}
	return g
}

// cutOff cuts the leader off: the followers' answers to it wait (Hold),
// its new messages are delayed, and nothing of the others reaches it.
func (g *faultyGroup) cutOff() {
	for _, f := range []int{g.f1, g.f2} {
		g.faults[g.l].Hold(g.addr(f))
		g.faults[g.l].Delay(g.addr(f), time.Minute)
		g.faults[f].Block(g.addr(g.l))
	}
}

// takeOver makes f1 stand (as the prober makes it: TimeoutNow, which voters
// that know a leader obey) and acknowledge k=after; it skips the test if
// the old leader stepped down meanwhile.
func (g *faultyGroup) takeOver(t *testing.T) {
	t.Helper()
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax,
		ID: []byte(g.reps[g.l].serverID), Addr: []byte(g.addr(g.l))}}
	if _, err := g.reps[g.f1].trans.DeliverLocal(req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() error {
		if g.reps[g.f1].Raft().State() != raft.Leader {
			return errors.New("the follower has not taken over")
		}
		return nil
	})
	put(t, g.reps[g.f1], "k", "after")
	if g.reps[g.l].Raft().State() != raft.Leader {
		t.Skip("the old leader stepped down before the read (a slow machine): nothing to test")
	}
}

// checkRead fails the test if the old leader's read (its result err)
// was confirmed and returns anything but the acknowledged k=after.
func (g *faultyGroup) checkRead(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Logf("the old leader refused the read: %v", err)
		return
	}
	e, found, err := g.reps[g.l].FSM().Get([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if !found || string(e.Value) != "after" {
		t.Fatalf("the old leader confirmed a read that returns %q, not the acknowledged %q", e.Value, "after")
	}
}
