package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// The running side of a meta recovery (metarecover.go): the fenced server
// ids are refused, committed, gossiped, and a fenced node finds out.

// maxGossipFence bounds the fenced ids a node gossips (memberlist's node
// meta holds 512 bytes): the latest recovery's, which are the ones whose
// nodes may still come back.
const maxGossipFence = 5

// isFenced reports whether server id was fenced by a meta recovery: in the
// meta state, or in this node's own recovery record before it is
// committed. The transport asks on every inbound Raft RPC.
func (n *Node) isFenced(id raft.ServerID) bool {
	if f := n.localFence; f != nil && slices.Contains(f.Fenced, string(id)) {
		return true
	}
	return n.metaFSM.IsFenced(string(id))
}

// gossipFence is what this node gossips of the fence: its own recovery's
// ids, else the last ones of the meta state.
func (n *Node) gossipFence() string {
	if f := n.localFence; f != nil {
		return strings.Join(f.Fenced[:min(len(f.Fenced), maxGossipFence)], ",")
	}
	ids := n.meta.fsm.Fenced()
	return strings.Join(ids[max(0, len(ids)-maxGossipFence):], ",")
}

// checkFence runs in the meta loop: it commits this node's recovery record
// once it leads the meta group, and stops the meta group of a node whose
// own server id some member gossips as fenced.
func (n *Node) checkFence() {
	if n.metaFenced.Load() != nil {
		return
	}
	if n.meta.fsm.IsFenced(string(n.serverID)) {
		n.fenceSelf("this node's copy of the meta state")
		return
	}
	for _, m := range n.gossip.snapshot() {
		if m.state == memberlist.StateAlive && m.meta.ID != n.cfg.Name && slices.Contains(strings.Split(m.meta.Fence, ","), string(n.serverID)) {
			n.fenceSelf("node " + m.meta.ID)
			return
		}
	}
	f := n.localFence
	if f == nil || n.meta.raft.State() != raft.Leader {
		return
	}
	var missing []string
	for _, id := range f.Fenced {
		if !n.meta.fsm.IsFenced(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return
	}
	if err := fsm.CheckVersion(fsm.MetaVersion(&fsm.FenceServers{}), n.meta.fsm.ClusterVersion()); err != nil {
		// Below cluster version 4 the fence holds on this node only (its
		// transport refuses the ids; every node refuses non-voters).
		if !n.fenceVersionTold {
			n.log.Warn("meta recovery: fenced server ids not committed until every node is upgraded; only this node refuses them", "fenced", missing, "error", err)
			n.fenceVersionTold = true
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.proposeMeta(ctx, &fsm.FenceServers{IDs: missing}); err != nil {
		n.log.Warn("meta recovery: commit the fenced server ids", "fenced", missing, "error", err)
		return
	}
	n.log.Warn("meta recovery: fenced server ids committed", "fenced", missing)
}

// fenceSelf stops the meta group of a node that a meta recovery fenced:
// its configuration is the old one, in which it may still count as a
// voter, and no node of the recovered cluster will take its RPCs. It keeps
// running so that an operator sees why (logs, /v1/status); it serves no
// channel, as its meta copy never becomes current (metaCurrent).
func (n *Node) fenceSelf(by string) {
	why := fmt.Sprintf("fenced by a meta recovery (told by %s): server id %s may not take part in the cluster again; "+
		"stop the node, wipe its data dir and start it again to rejoin as a new incarnation (docs/operations.md \"Recovering the meta group\")",
		by, n.serverID)
	if !n.metaFenced.CompareAndSwap(nil, &why) {
		return
	}
	n.log.Error("this node was removed by a meta recovery: its meta group is stopped", "server_id", n.serverID, "told_by", by,
		"fix", "stop the node, wipe its data dir and start it again")
	n.meta.trans.Close()
	go func() {
		if err := n.meta.raft.Shutdown().Error(); err != nil {
			n.log.Warn("fenced: stop the meta group", "error", err)
		}
	}()
}

// MetaFenced is why this node was fenced by a meta recovery, "" if it was
// not.
func (n *Node) MetaFenced() string {
	if p := n.metaFenced.Load(); p != nil {
		return *p
	}
	return ""
}
