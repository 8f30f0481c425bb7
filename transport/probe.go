package transport

import (
	"errors"
	"syscall"
	"time"
)

// Peer probing (docs/design.md "D13"). Raft's own failure detection is per
// group and runs on the group's heartbeat timeout, which channel groups set
// high to keep idle cost down. The node probes each peer it talks to with a
// yamux ping every probeInterval instead, once for all groups, so the layer
// above can shorten the timers of just the groups led from a peer that went
// quiet and have them elect at once.
const (
	probeInterval  = 250 * time.Millisecond
	probeDownAfter = time.Second     // no answer for this long: unhealthy
	probeIdleAfter = 2 * time.Minute // peers unused this long are not probed
)

// PeerHealthy reports whether the node at addr (a cluster address) answered
// a probe within the last second. It is false for a peer not probed yet;
// asking about a peer starts probing it.
func (n *Node) PeerHealthy(addr string) bool {
	p, err := n.peer(addr)
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.lastOK.IsZero() && time.Since(p.lastOK) < probeDownAfter && !p.refused.After(p.lastOK)
}

// PeerLost reports whether the node at addr answered probes before and has
// stopped: no answer for probeDownAfter, or its port refused a dial since.
// Unlike !PeerHealthy it is false for a peer not probed yet, so callers can
// skip a node known to be gone without skipping one never asked; and it
// starts no probe.
func (n *Node) PeerLost(addr string) bool {
	n.mu.Lock()
	p := n.peers[addr]
	n.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.lastOK.IsZero() && (time.Since(p.lastOK) >= probeDownAfter || p.refused.After(p.lastOK))
}

// watchLeader keeps the node that sent this node a heartbeat (addr, from
// the request's RPC header) among the probed peers. Raft followers send
// their leader nothing, so a node that leads no group of its own would
// otherwise not probe the nodes it follows, and would never report their
// loss (a follower of the meta group in a cluster of one channel did not;
// TestMetaLeaderKilledSurvivorStands). Heartbeats come every few hundred
// ms per group, batched per peer: this is one map lookup per batch.
func (n *Node) watchLeader(addr []byte) {
	if len(addr) == 0 || string(addr) == string(n.Addr()) {
		return
	}
	_, _ = n.peer(string(addr))
}

func (n *Node) probeLoop() {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	var peers []*peer
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		peers = peers[:0]
		n.mu.Lock()
		for _, p := range n.peers {
			peers = append(peers, p)
		}
		n.mu.Unlock()
		for _, p := range peers {
			p.probeTick()
		}
	}
}

// probeTick starts a probe unless one is still running, and reports a
// healthy peer that stopped answering.
func (p *peer) probeTick() {
	now := time.Now()
	p.mu.Lock()
	if p.closed || now.Sub(time.Unix(0, p.lastUsed.Load())) > probeIdleAfter {
		p.mu.Unlock()
		return
	}
	if !p.probing {
		p.probing = true
		if !p.n.goFunc(p.probe) {
			p.probing = false
		}
	}
	was := p.healthy
	p.healthy = !p.lastOK.IsZero() && now.Sub(p.lastOK) < probeDownAfter && !p.refused.After(p.lastOK)
	down, up := was && !p.healthy, !was && p.healthy
	p.mu.Unlock()
	if down {
		p.n.logger.Warn("peer stopped answering probes", "peer", p.addr)
		if cb := p.n.cfg.OnPeerDown; cb != nil {
			p.n.goFunc(func() { cb(p.addr) })
		}
	}
	if up {
		if cb := p.n.cfg.OnPeerUp; cb != nil {
			p.n.goFunc(func() { cb(p.addr) })
		}
	}
}

// probe pings the peer over its session, dialing if needed. The dial
// backoff applies, so a dead peer costs one dial per dialBackoff.
func (p *peer) probe() {
	defer func() {
		p.mu.Lock()
		p.probing = false
		p.mu.Unlock()
	}()
	sess, err := p.session(p.n.ctx, time.Now().Add(p.n.cfg.DialTimeout+handshakeTimeout))
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			// Nothing listens there: the process is gone (a crash, kill -9),
			// which needs no second to be sure of.
			p.mu.Lock()
			p.refused = time.Now()
			p.mu.Unlock()
		}
		return
	}
	if _, err := sess.Ping(); err != nil {
		return
	}
	p.mu.Lock()
	p.lastOK = time.Now()
	p.mu.Unlock()
}
