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
// has led it in the same term for rebalanceSettle (a node that just came
// back gets a moment to catch up; no move right after an election), at
// most rebalanceMovesPerPass groups a pass, and a group whose transfer
// failed waits rebalanceBackoff before the next try. A peer that answers
// probes again (PeerUp: a restarted node) starts passes every second for
// rebalanceBurst. Writes sent during a transfer
// are redirected to the new leader (Replica.afterTransfer), not failed.

const (
	rebalanceMaxLag       = 256
	rebalanceMovesPerPass = 32
	rebalanceParallel     = 8
	rebalanceBackoff      = time.Minute
	// rebalanceFresh is how recent the target's last answer to this leader
	// must be (transport.GroupTransport.FollowerLastLog). Only answers that
	// crossed the wire count: an idle group's follower gets a real
	// heartbeat every 1.75-2.4 s by default (QuietHeartbeatEvery of the
	// 5 s heartbeat timeout, plus one of raft's 0.5-1 s heartbeat
	// intervals and a batch's wait).
	rebalanceFresh = 4 * time.Second
	// rebalanceFollowUp is the pause before the next pass when more may
	// be due; see rebalanceLoop.
	rebalanceFollowUp = time.Second
	// rebalanceSettle is how long a node must have led a group in its
	// term before the group moves (at most LeaderRebalance).
	rebalanceSettle = 3 * time.Second
	// rebalanceBurst is how long after a peer answers probes again the
	// passes come every rebalanceFollowUp.
	rebalanceBurst = 20 * time.Second
)

// rebalancer is the state of a node's rebalance passes.
type rebalancer struct {
	m       *Manager
	led     map[uint64]ledSince  // group -> the term this node leads it in, since the first pass that saw it
	backoff map[uint64]time.Time // group -> no try before
	settle  time.Duration        // how long a group must have been led in its term before it moves
}

// ledSince is when a pass first saw this node lead a group in term.
type ledSince struct {
	term uint64
	at   time.Time
}

func newRebalancer(m *Manager) *rebalancer {
	return &rebalancer{m: m, led: map[uint64]ledSince{}, backoff: map[uint64]time.Time{},
		settle: min(m.cfg.LeaderRebalance, rebalanceSettle)}
}

func (m *Manager) rebalanceLoop() {
	defer m.loops.Done()
	b := newRebalancer(m)
	t := time.NewTimer(m.cfg.LeaderRebalance)
	defer t.Stop()
	var burstUntil time.Time
	for {
		select {
		case <-m.stop:
			return
		case <-m.rebalanceKick:
			// A peer answers probes again: it may be the preferred leader
			// of hundreds of groups (a restart). Give its replicas a
			// moment to answer their leaders, then pass every second for
			// a while instead of waiting up to a full interval.
			burstUntil = time.Now().Add(rebalanceBurst)
			t.Reset(rebalanceFollowUp)
			continue
		case <-t.C:
		}
		// A pass that moved a full batch, or saw groups due to move once
		// they have been led long enough, goes on after a short pause: a
		// node with 1,000 replicas that restarts is the preferred leader
		// of a third of its groups, which it leads again within seconds,
		// not minutes (docs/benchmarks.md "Idle channels, real agents").
		more := b.pass(time.Now())
		t.Reset(nextRebalance(more || time.Now().Before(burstUntil), m.cfg.LeaderRebalance))
	}
}

// nextRebalance is the pause before the next pass: rebalanceFollowUp when
// more may be due, else the configured interval.
func nextRebalance(more bool, every time.Duration) time.Duration {
	if more {
		return min(every, rebalanceFollowUp)
	}
	return every
}

// PeerUp is called (by the transport's prober) when the node at the
// cluster address addr answers probes, for the first time or again after
// it stopped: the rebalancer looks for groups to hand it at once.
func (m *Manager) PeerUp(addr string) {
	select {
	case m.rebalanceKick <- struct{}{}:
	default:
	}
}

type leaderMove struct {
	r  *Replica
	to raft.Server
}

// pass moves the groups due to move, returns when their transfers ended,
// and reports whether more may be due soon: it moved a full batch, or a
// group would have moved had it been led longer in its term. A group
// moves only once this node has led it in the same term for b.settle
// (three seconds, or the interval if shorter), as seen by the passes: no
// move right after an election, and a node that just came back gets a
// moment to catch up.
func (b *rebalancer) pass(now time.Time) (more bool) {
	led := map[uint64]ledSince{}
	var moves []leaderMove
	for _, r := range b.m.Replicas() {
		if r.raft.State() != raft.Leader {
			continue
		}
		term := r.raft.CurrentTerm()
		since, ok := b.led[r.GroupID]
		if !ok || since.term != term {
			since = ledSince{term: term, at: now}
		}
		led[r.GroupID] = since
		if len(moves) == rebalanceMovesPerPass || now.Before(b.backoff[r.GroupID]) {
			continue
		}
		to, ok := r.preferredLeader()
		if !ok || r.disagrees(to.ID) || !b.m.cfg.Transport.PeerHealthy(string(to.Address)) || !r.caughtUp(to.Address) {
			continue
		}
		if now.Sub(since.at) < b.settle {
			more = true
			continue
		}
		moves = append(moves, leaderMove{r: r, to: to})
	}
	b.led = led
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
	return more || len(moves) == rebalanceMovesPerPass && !anyFailed
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
