package shard

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Leadership goes back where the placement put it (as Kafka's preferred
// leader election). The allocator spreads the first replicas of channels
// over the nodes and a new group's first leader is its first replica
// (failover.go), so a fresh cluster's leaders are spread. A failover or a
// graceful shutdown moves leadership to the survivors, and without this
// nothing would move it back: after a rolling restart one node could lead
// every group and do most of the cluster's work.
//
// So every Config.LeaderRebalance each node looks at the groups it leads
// and hands a group back to its preferred leader, the first voter of its
// configuration, when that replica is on another node that the prober
// reports up, has answered this leader recently, and is caught up (its log
// within rebalanceMaxLag entries of the leader's). Caught up matters: raft
// refuses new entries while a transfer runs and catches the target up
// first, for up to an election timeout. A group moves only once this node
// has led it for a full pass in the same term (a node that just came back
// gets a pass to catch up; no move right after an election), at most
// rebalanceMovesPerPass groups a pass, and a group whose transfer failed
// waits rebalanceBackoff before the next try. Writes sent during a transfer
// are redirected to the new leader (Replica.afterTransfer), not failed.

const (
	rebalanceMaxLag       = 256
	rebalanceMovesPerPass = 32
	rebalanceParallel     = 8
	rebalanceBackoff      = time.Minute
	// rebalanceFresh is how recent the target's last answer to this leader
	// must be (transport.GroupTransport.FollowerLastLog). Only answers that
	// crossed the wire count: an idle group's follower gets a real
	// heartbeat every 2-3 s by default (QuietHeartbeatEvery of the 5 s
	// heartbeat timeout, plus one of raft's 0.5-1 s heartbeat intervals).
	rebalanceFresh = 4 * time.Second
	// rebalanceFollowUp is the pause before the next pass when a pass
	// moved a full batch; see rebalanceLoop.
	rebalanceFollowUp = time.Second
)

// rebalancer is the state of a node's rebalance passes.
type rebalancer struct {
	m       *Manager
	seen    map[uint64]uint64    // group -> term it was led in at the last pass
	backoff map[uint64]time.Time // group -> no try before
}

func (m *Manager) rebalanceLoop() {
	defer m.loops.Done()
	b := &rebalancer{m: m, seen: map[uint64]uint64{}, backoff: map[uint64]time.Time{}}
	t := time.NewTimer(m.cfg.LeaderRebalance)
	defer t.Stop()
	regular := true
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		// A pass that moved a full batch (a node came back and is the
		// preferred leader of hundreds of groups: after a restart, a third
		// of a node's groups) goes on after a short pause with the groups
		// the last regular pass saw, instead of 32 groups every 10 s: a
		// node with 1,000 replicas leads its groups again within seconds,
		// not minutes (docs/benchmarks.md "Idle channels, real agents").
		full := b.pass(regular)
		regular = !full
		t.Reset(nextRebalance(full, m.cfg.LeaderRebalance))
	}
}

// nextRebalance is the pause before the next pass: rebalanceFollowUp after
// a full pass (more groups may be due), else the configured interval.
func nextRebalance(full bool, every time.Duration) time.Duration {
	if full {
		return min(every, rebalanceFollowUp)
	}
	return every
}

type leaderMove struct {
	r  *Replica
	to raft.Server
}

// pass moves the groups due to move, returns when their transfers ended,
// and reports whether it moved a full batch (more may be due). A regular
// pass remembers the term of every group this node leads; a follow-up pass
// (regular false) moves only groups led in the same term at the last
// regular pass, and keeps what that pass saw: a group still needs to have
// been led for a whole regular pass before it moves.
func (b *rebalancer) pass(regular bool) bool {
	now := time.Now()
	seen := map[uint64]uint64{}
	var moves []leaderMove
	for _, r := range b.m.Replicas() {
		if r.raft.State() != raft.Leader {
			continue
		}
		term := r.raft.CurrentTerm()
		seen[r.GroupID] = term
		if b.seen[r.GroupID] != term || len(moves) == rebalanceMovesPerPass || now.Before(b.backoff[r.GroupID]) {
			continue
		}
		if to, ok := r.preferredLeader(); ok && !r.disagrees(to.ID) && b.m.cfg.Transport.PeerHealthy(string(to.Address)) && r.caughtUp(to.Address) {
			moves = append(moves, leaderMove{r: r, to: to})
		}
	}
	if regular {
		b.seen = seen
	}
	for gid, t := range b.backoff {
		if now.After(t) {
			delete(b.backoff, gid)
		}
	}

	failed := make([]bool, len(moves))
	sem := make(chan struct{}, rebalanceParallel)
	var wg sync.WaitGroup
	for i, mv := range moves {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			failed[i] = !b.move(mv)
		}()
	}
	wg.Wait()
	anyFailed := false
	for i, mv := range moves {
		if failed[i] {
			b.backoff[mv.r.GroupID] = now.Add(rebalanceBackoff)
			anyFailed = true
		}
	}
	return len(moves) == rebalanceMovesPerPass && !anyFailed
}

// move hands mv's group to its preferred leader and reports whether that
// worked.
func (b *rebalancer) move(mv leaderMove) bool {
	r := mv.r
	err := r.wait(context.Background(), r.raft.LeadershipTransferToServer(mv.to.ID, mv.to.Address))
	if err != nil {
		b.m.metrics.leaderMoves.WithLabelValues("failed").Inc()
		b.m.log.Debug("could not hand leadership to the preferred leader", "channel", r.Channel, "group", r.GroupID, "to", NodeOf(mv.to.ID), "error", err)
		return false
	}
	b.m.metrics.leaderMoves.WithLabelValues("ok").Inc()
	b.m.log.Info("handed leadership back to the preferred leader", "channel", r.Channel, "group", r.GroupID, "to", NodeOf(mv.to.ID))
	return true
}

// preferredLeader is the first voter of the group's configuration (the first
// node of its placement) when that is another replica than this one.
func (r *Replica) preferredLeader() (raft.Server, bool) {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return raft.Server{}, false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			return s, s.ID != r.serverID
		}
	}
	return raft.Server{}, false
}

// caughtUp says the follower at addr answered this leader recently with a
// log within rebalanceMaxLag entries of the leader's.
func (r *Replica) caughtUp(addr raft.ServerAddress) bool {
	last, age, ok := r.trans.FollowerLastLog(addr)
	return ok && age < rebalanceFresh && last+rebalanceMaxLag >= r.raft.LastIndex()
}
