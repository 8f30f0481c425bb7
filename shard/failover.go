package shard

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/transport"
)

// Fast failover without fast idle timers (docs/design.md "D13"). Channel
// groups keep a long heartbeat timeout so that a thousand idle replicas cost
// little; the node transport probes each peer every 250 ms instead, once for
// all groups. When a peer stops answering, PeerDown shortens the timers of
// just the groups that peer leads, so their followers elect within one short
// timeout rather than waiting out the long one. Pre-vote keeps a false
// alarm harmless: followers that still hear the leader refuse the election.
// The timers go back to normal a few seconds later.

// shortTimersFor is how long a group keeps its short timers after a peer
// went down.
const shortTimersFor = 5 * time.Second

// PeerDown is called (by the transport's prober) when the node at the
// cluster address addr stopped answering. Every group that node led gets
// short timers here (the fallback), and its surviving voters stand for
// election without waiting for them (Stand), in an order they all compute
// alike: failover then takes the prober's detection and one vote round,
// whatever the heartbeat timeout.
func (m *Manager) PeerDown(addr string) {
	for _, r := range m.Replicas() {
		if leader, _ := r.raft.LeaderWithID(); string(leader) == addr {
			r.shortenTimers(m.cfg.Raft.LeaderLeaseTimeout)
			r.stand(addr)
		}
	}
}

// standStep is how long each surviving voter waits after the one ranked
// before it. The first stands at once; the next stands only if no leader
// came of that (the first one's log was behind its own, so it refused its
// vote), and so on.
const standStep = 300 * time.Millisecond

// stand makes this replica stand for election in its turn (Stand).
func (r *Replica) stand(deadLeader string) {
	Stand(r.raft, r.trans, r.serverID, deadLeader, func() bool { return r.stopped.Load() }, func(err error) {
		if err != nil {
			r.m.log.Debug("could not stand for election", "group", r.GroupID, "error", err)
			return
		}
		r.m.metrics.fastElections.Inc()
		r.m.log.Info("leader's node is down: standing for election", "channel", r.Channel, "group", r.GroupID, "dead_leader", deadLeader)
	})
}

// Stand makes the follower r (server self) of a group whose leader's node
// at deadLeader is down start an election in its turn: the surviving
// voters take turns by server id, standStep apart, so every follower
// computes the same order without talking and two never split the vote.
// A turn is skipped if r stopped, leads, or found another leader
// meanwhile; stood hears the outcome of a turn taken. A non-voter does
// nothing.
//
// Standing is a TimeoutNow delivered to the local replica through its
// transport, as a leadership transfer does: no pre-vote, and voters that
// still remember the old leader vote anyway. A false alarm from the prober
// therefore costs a leader change, never safety: Raft's vote rules still
// decide who may lead.
func Stand(r *raft.Raft, trans *transport.GroupTransport, self raft.ServerID, deadLeader string, stopped func() bool, stood func(error)) {
	rank, ok := standRank(r, self, deadLeader)
	if !ok {
		return
	}
	stand := func() {
		if stopped() || r.State() == raft.Leader {
			return
		}
		addr, id := r.LeaderWithID()
		if addr != "" && string(addr) != deadLeader {
			return
		}
		req := &raft.TimeoutNowRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(deadLeader)},
		}
		_, err := trans.DeliverLocal(req)
		stood(err)
	}
	if rank == 0 {
		stand()
		return
	}
	time.AfterFunc(time.Duration(rank)*standStep, stand)
}

// standRank is the place of the server self among the voters of r's group
// other than the leader at addr, by server id; ok is false if self is not
// a voter.
func standRank(r *raft.Raft, self raft.ServerID, addr string) (rank int, ok bool) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return 0, false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || string(s.Address) == addr {
			continue
		}
		if s.ID == self {
			ok = true
			continue
		}
		// Not filtered by the prober's view, which differs from node to
		// node: a dead voter ranked first only delays the next by a step.
		if s.ID < self {
			rank++
		}
	}
	return rank, ok
}

// ShortenTimers makes a group's follower elect soon if its leader is gone:
// the heartbeat and election timeouts become d (the shortest raft allows is
// the leader lease) for shortTimersFor. It returns raft's error if the
// shorter timers are refused (d below the lease), and nil without a change
// if d is not shorter than the group's timers.
//
// A leader keeps its short timers leaderExtra longer than that: a leader
// back on the long heartbeat interval (HeartbeatTimeout/10, up to twice
// that) while a follower still expects a heartbeat within d would see that
// follower start (harmless, refused) pre-votes and forget its leader for a
// moment; followers that shortened at about the same time are back to
// normal by then.
func ShortenTimers(r *raft.Raft, d time.Duration, stopped func() bool) error {
	normal := r.ReloadableConfig()
	short := normal
	short.HeartbeatTimeout, short.ElectionTimeout = d, d
	if short.HeartbeatTimeout >= normal.HeartbeatTimeout {
		return nil
	}
	if err := r.ReloadConfig(short); err != nil {
		return fmt.Errorf("shorten raft timers to %v: %w", d, err)
	}
	var restore func()
	extended := false
	restore = func() {
		if stopped() {
			return
		}
		if r.State() == raft.Leader && !extended {
			extended = true
			time.AfterFunc(leaderExtra, restore)
			return
		}
		_ = r.ReloadConfig(normal)
	}
	time.AfterFunc(shortTimersFor, restore)
	return nil
}

// leaderExtra is how much longer a leader keeps short timers than its
// followers (ShortenTimers).
const leaderExtra = 3 * time.Second

func (r *Replica) shortenTimers(d time.Duration) {
	if !r.shortTimers.CompareAndSwap(false, true) {
		return // already short; the first call restores them
	}
	if err := ShortenTimers(r.raft, d, func() bool { return r.stopped.Load() }); err != nil {
		r.m.log.Warn("failover timers not shortened", "channel", r.Channel, "group", r.GroupID, "error", err)
	}
	time.AfterFunc(shortTimersFor+leaderExtra, func() { r.shortTimers.Store(false) })
}

// startupGrace is how long a replica started from disk waits to hear a
// leader before it shortens its timers (electionAtStart).
const startupGrace = 3 * time.Second

// electionAtStart keeps a group that has no leader from waiting out the
// idle heartbeat timeout (5-10 s) before its first election. In a new
// group the first replica of the placement shortens its timers at once:
// nobody leads the group yet, and it is elected within one to two lease
// timeouts (the others stand only if it does not). A replica started from disk
// first gives a running leader startupGrace to reach it (the common case:
// one node restarted), and shortens its timers only if none did (the whole
// cluster restarted).
func (r *Replica) electionAtStart(bootstrapped, preferred bool) {
	lease := r.m.cfg.Raft.LeaderLeaseTimeout
	if bootstrapped {
		// Only the placement's first replica (the allocator's preferred
		// leader) shortens its timers: it stands first and, when it is up,
		// wins, which spreads the first leaders as the allocator chose.
		// The others keep the long timers as the fallback should it not
		// come up.
		if preferred {
			r.shortenTimers(lease)
		}
		return
	}
	time.AfterFunc(startupGrace, func() {
		if r.stopped.Load() {
			return
		}
		if _, id := r.raft.LeaderWithID(); id == "" {
			r.shortenTimers(lease)
		}
	})
}
