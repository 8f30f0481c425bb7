package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// InternalPrefix is the path prefix of node-to-node calls. They are served
// only on streams of the cluster port, whose peers proved the cluster key,
// never on the public HTTP port.
const InternalPrefix = "/internal/"

// InternalHandler serves node-to-node calls: GET /internal/replicas/{gid}
// answers this node's view of one of its replicas, GET
// /internal/snapshot/{gid} streams its state (a repair, hashcheck.go).
func (n *Node) InternalHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /internal/replicas/{gid}", func(w http.ResponseWriter, r *http.Request) {
		rep, ok := n.replicaOf(w, r)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep.Info())
	})
	mux.HandleFunc("GET /internal/snapshot/{gid}", n.serveSnapshot)
	// No longer asked by this version (a node whose meta copy trails
	// catches up with a meta read index, metaread.go); kept for nodes of
	// the previous version during a rolling upgrade.
	mux.HandleFunc("GET /internal/channels/{name}", func(w http.ResponseWriter, r *http.Request) {
		ch, ok := n.meta.fsm.Channel(r.PathValue("name"))
		if !ok {
			http.Error(w, "no such channel", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ch)
	})
	return mux
}

// replicaOf finds the local replica a /internal/.../{gid} call names, or
// answers the error itself.
func (n *Node) replicaOf(w http.ResponseWriter, r *http.Request) (*shard.Replica, bool) {
	gid, err := strconv.ParseUint(r.PathValue("gid"), 10, 64)
	if err != nil {
		http.Error(w, "bad group id", http.StatusBadRequest)
		return nil, false
	}
	rep, ok := n.shards.Replica(gid)
	if !ok {
		http.Error(w, "not hosted", http.StatusNotFound)
	}
	return rep, ok
}

// replicaInfo asks a node (or this one) for its replica of gid.
func (n *Node) replicaInfo(ctx context.Context, nd fsm.NodeRecord, gid uint64) (shard.ReplicaInfo, error) {
	if nd.ID == n.cfg.Name {
		rep, ok := n.shards.Replica(gid)
		if !ok {
			return shard.ReplicaInfo{}, shard.ErrNotHosted
		}
		return rep.Info(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, internalCallLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.ClusterAddr+InternalPrefix+"replicas/"+strconv.FormatUint(gid, 10), nil)
	if err != nil {
		return shard.ReplicaInfo{}, err
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return shard.ReplicaInfo{}, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return shard.ReplicaInfo{}, shard.ErrNotHosted
	}
	if resp.StatusCode != http.StatusOK {
		return shard.ReplicaInfo{}, fmt.Errorf("cluster: ask %s about group %d: HTTP %d", nd.ID, gid, resp.StatusCode)
	}
	var info shard.ReplicaInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return info, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	return info, nil
}

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
func (n *Node) leaderUnreachable(addr string) {
	if n.leaders.forget(addr) {
		n.metrics.leaderHintsDropped.Inc()
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
func (n *Node) remoteRedirect(ctx context.Context, ch fsm.ChannelRecord, wantLeader bool) error {
	// While no placed replica knows a leader (most often a channel created a
	// moment ago, its first election under way), ask again every 50 ms, as
	// a local replica's request waits for its leader (awaitLeader).
	var err error
	n.waitFor(ctx, 50*time.Millisecond, func() bool {
		err = n.findRemoteLeader(ctx, ch, wantLeader)
		return !errors.Is(err, shard.ErrNoLeader)
	})
	return err
}

// findRemoteLeader is one round of remoteRedirect: the leader hint, else
// the placed replicas asked in turn.
func (n *Node) findRemoteLeader(ctx context.Context, ch fsm.ChannelRecord, wantLeader bool) error {
	if h, ok := n.leaders.get(ch.GroupID); ok {
		if !n.trans.PeerLost(h.addr) {
			return &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: h.nodeID, Addr: h.addr}
		}
		n.leaderUnreachable(h.addr)
	}
	var fallback *fsm.NodeRecord
	for _, nd := range n.placedNodes(ch) {
		// A node the prober lost is skipped before the meta state says
		// so: neither it nor a replica's memory of it as the leader can
		// help (the replicas learn of a new leader only after that).
		if nd.State != fsm.NodeAlive || n.trans.PeerLost(nd.ClusterAddr) {
			continue
		}
		if fallback == nil {
			nd := nd
			fallback = &nd
		}
		info, err := n.replicaInfo(ctx, nd, ch.GroupID)
		if err != nil || info.Leader == "" {
			continue
		}
		if leader, ok := n.meta.fsm.Node(info.Leader); ok && !n.trans.PeerLost(leader.ClusterAddr) {
			n.leaders.put(ch.GroupID, leaderHint{nodeID: leader.ID, addr: leader.ClusterAddr})
			return &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: leader.ID, Addr: leader.ClusterAddr}
		}
	}
	if fallback != nil && !wantLeader {
		return &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: fallback.ID, Addr: fallback.ClusterAddr}
	}
	return shard.ErrNoLeader
}
