package shard

import (
	"time"

	"github.com/hashicorp/raft"
)

// Fast failover without fast idle timers (DESIGN decision 13). Channel
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
// cluster address addr stopped answering.
func (m *Manager) PeerDown(addr string) {
	for _, r := range m.Replicas() {
		if leader, _ := r.raft.LeaderWithID(); string(leader) == addr {
			r.shortenTimers(m.cfg.Raft.LeaderLeaseTimeout)
		}
	}
}

// ShortenTimers makes a group's follower elect soon if its leader is gone:
// the heartbeat and election timeouts become d (the shortest raft allows is
// the leader lease) for shortTimersFor.
//
// A leader keeps its short timers leaderExtra longer than that: a leader
// back on the long heartbeat interval (HeartbeatTimeout/10, up to twice
// that) while a follower still expects a heartbeat within d would see that
// follower start (harmless, refused) pre-votes and forget its leader for a
// moment; followers that shortened at about the same time are back to
// normal by then.
func ShortenTimers(r *raft.Raft, d time.Duration, stopped func() bool) {
	normal := r.ReloadableConfig()
	short := normal
	short.HeartbeatTimeout, short.ElectionTimeout = d, d
	if short.HeartbeatTimeout >= normal.HeartbeatTimeout {
		return
	}
	if err := r.ReloadConfig(short); err != nil {
		return
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
}

// leaderExtra is how much longer a leader keeps short timers than its
// followers (ShortenTimers).
const leaderExtra = 3 * time.Second

func (r *Replica) shortenTimers(d time.Duration) {
	if !r.shortTimers.CompareAndSwap(false, true) {
		return // already short; the first call restores them
	}
	ShortenTimers(r.raft, d, func() bool { return r.stopped.Load() })
	time.AfterFunc(shortTimersFor+leaderExtra, func() { r.shortTimers.Store(false) })
}
