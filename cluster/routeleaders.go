package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// leaderCache remembers, for channels this node does not host, which node
// leads them, so a request is forwarded straight to the leader in one hop.
type leaderCache struct {
	mu sync.Mutex
	m  map[uint64]leaderHint
}

type leaderHint struct {
	nodeID, addr string
	at           time.Time
}

func newLeaderCache() *leaderCache { return &leaderCache{m: map[uint64]leaderHint{}} }

func (c *leaderCache) get(gid uint64) (leaderHint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[gid]
	if !ok || time.Since(h.at) > leaderCacheTTL {
		return leaderHint{}, false
	}
	return h, true
}

// forget drops every hint naming the node at addr (its cluster address),
// and reports whether there was one.
func (c *leaderCache) forget(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	dropped := false
	for gid, h := range c.m {
		if h.addr == addr {
			delete(c.m, gid)
			dropped = true
		}
	}
	return dropped
}

// leaderUnreachable is told that the node at addr could not be reached
// for a channel's request: hints naming it go, so the next request asks
// the replicas who leads now instead of failing the same way for the rest
// of the hint's life (after a kill -9 of a leader's node, a couple of dozen
// requests through nodes without a replica failed so).
func (r *router) leaderUnreachable(addr string) {
	if r.leaders.forget(addr) {
		r.n.metrics.leaderHintsDropped.Inc()
	}
}

func (c *leaderCache) put(gid uint64, h leaderHint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h.at = time.Now()
	c.m[gid] = h
}

// remoteRedirect finds where a request for a channel this node does not
// host should go: its leader if a replica names one, else a hosting node.
func (r *router) remoteRedirect(ctx context.Context, ch fsm.ChannelRecord, wantLeader bool) error {
	// While no placed replica knows a leader (most often a channel created a
	// moment ago, its first election under way), ask again every 50 ms, as
	// a local replica's request waits for its leader (awaitLeader).
	var err error
	r.n.waitFor(ctx, 50*time.Millisecond, func() bool {
		err = r.findRemoteLeader(ctx, ch, wantLeader)
		return !errors.Is(err, shard.ErrNoLeader)
	})
	return err
}

// findRemoteLeader is one round of remoteRedirect: the leader hint, else
// the placed replicas asked in turn.
func (r *router) findRemoteLeader(ctx context.Context, ch fsm.ChannelRecord, wantLeader bool) error {
	if h, ok := r.leaders.get(ch.GroupID); ok {
		if !r.n.trans.PeerLost(h.addr) {
			return &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: h.nodeID, Addr: h.addr}
		}
		r.leaderUnreachable(h.addr)
	}
	var fallback *fsm.NodeRecord
	for _, nd := range r.n.placedNodes(ch) {
		// A node the prober lost is skipped before the meta state says
		// so: neither it nor a replica's memory of it as the leader can
		// help (the replicas learn of a new leader only after that).
		if nd.State != fsm.NodeAlive || r.n.trans.PeerLost(nd.ClusterAddr) {
			continue
		}
		if fallback == nil {
			nd := nd
			fallback = &nd
		}
		info, err := r.replicaInfo(ctx, nd, ch.GroupID)
		if err != nil || info.Leader == "" {
			continue
		}
		if leader, ok := r.n.meta.fsm.Node(info.Leader); ok && !r.n.trans.PeerLost(leader.ClusterAddr) {
			r.leaders.put(ch.GroupID, leaderHint{nodeID: leader.ID, addr: leader.ClusterAddr})
			return &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: leader.ID, Addr: leader.ClusterAddr}
		}
	}
	if fallback != nil && !wantLeader {
		return &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: fallback.ID, Addr: fallback.ClusterAddr}
	}
	return shard.ErrNoLeader
}
