package transport

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Who may send a group its RPCs.
//
// Every node of the cluster can reach every other node's cluster port, and
// resource nodes may be run by strangers: being a member must not be enough
// to depose a group's leader. So each inbound Raft RPC is checked on two
// counts before its group sees it:
//
//   - the server id it claims (RPCHeader.ID) must belong to the node that
//     sent it (NodeOf the id is the certificate's node, with TLS), so one
//     node cannot speak for another;
//   - the sending node must be a voter of the group's current configuration
//     (GroupTransport.SetVoterCheck, which the layer above fills from
//     raft.GetConfiguration), so a non-voter or a stranger with a higher
//     term cannot start an election, replace the log or take leadership.
//     AppendEntries (heartbeats included) and InstallSnapshot also pass
//     from a node the layer above vouches for (SetReplicaCheck: one the
//     committed meta state places on the group): a follower that has not
//     yet received the entry that made its new leader a voter must still
//     take that leader's entries, or it never would (shard/DESIGN.md
//     "Who may send a group Raft RPCs").
//
// Without TLS the sender is known only by the id it claims: the voter check
// then guards against mistakes (a removed server still campaigning), not
// against a member that lies.
//
// Refused RPCs are answered with an error (the group sees nothing), counted
// in shardnet_transport_rpcs_refused_total and logged at WARN at most every
// 30 s.

// ErrRefused is returned (wrapped, as the remote error text) for an RPC
// that the sending node may not send to the group.
var ErrRefused = errors.New("transport: rpc refused")

// refusedWarnEvery: at most one WARN per this period for refused RPCs.
const refusedWarnEvery = 30 * time.Second

// NodeOf returns the node id part of a Raft server id: server ids are
// "<node>@<incarnation>" (shard.ServerIDFor); an id without '@' is all node.
func NodeOf(id raft.ServerID) string {
	s := string(id)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '@' {
			return s[:i]
		}
	}
	return s
}

// SetVoterCheck installs the group's voter check: isVoter(node) reports
// whether node may send the group Raft RPCs, normally whether it is a voter
// of the group's current configuration. It is called on the RPC path (once
// per RPC, heartbeats included), so it must be cheap and must not block.
// Until it is set, every node passes.
func (g *GroupTransport) SetVoterCheck(isVoter func(node string) bool) {
	if isVoter == nil {
		g.voters.Store(nil)
		return
	}
	g.voters.Store(&isVoter)
}

// SetReplicaCheck installs the group's replica check: mayReplicate(node)
// reports whether node may send the group AppendEntries and
// InstallSnapshot though the voter check refuses it (RequestVote and
// TimeoutNow never pass on it). Called on the RPC path only when the
// voter check refused, it must not block. nil removes it.
func (g *GroupTransport) SetReplicaCheck(mayReplicate func(node string) bool) {
	if mayReplicate == nil {
		g.replicas.Store(nil)
		return
	}
	g.replicas.Store(&mayReplicate)
}

// replicates reports whether an RPC of label carries replication from a
// leader: AppendEntries, heartbeats, InstallSnapshot.
func replicates(label int) bool {
	return label == labelAppendEntries || label == labelHeartbeat || label == labelInstallSnapshot
}

// authorize checks an inbound RPC for group g from the connection's
// authenticated node from ("" without TLS).
func (n *Node) authorize(g *GroupTransport, from string, h *raft.RPCHeader, label int) error {
	claimed := NodeOf(raft.ServerID(h.ID))
	node := from
	if n.cfg.TLS != nil {
		if claimed != from {
			return n.refuse(g.gid, from, label, fmt.Errorf("%w: server id %q is not of node %q, which sent it", ErrRefused, h.ID, from))
		}
	} else {
		node = claimed
	}
	if err := n.fence.check(h.ID); err != nil {
		return n.refuse(g.gid, node, label, err)
	}
	if check := g.voters.Load(); check != nil && !(*check)(node) {
		if rep := g.replicas.Load(); rep != nil && replicates(label) && (*rep)(node) {
			return nil
		}
		return n.refuse(g.gid, node, label, fmt.Errorf("%w: node %q is not a voter of group %d", ErrRefused, node, g.gid))
	}
	return nil
}

func (n *Node) refuse(gid uint64, node string, label int, err error) error {
	n.metrics.refused[label].Inc()
	now := time.Now().UnixNano()
	last := n.lastRefusedWarn.Load()
	args := []any{"group", gid, "node", node, "rpc", labelNames[label], "error", err}
	if now-last >= int64(refusedWarnEvery) && n.lastRefusedWarn.CompareAndSwap(last, now) {
		n.logger.Warn("refused a Raft RPC", args...)
	} else {
		n.logger.Debug("refused a Raft RPC", args...)
	}
	return err
}

// rpcHeader returns a decoded request's header and its metric label.
func rpcHeader(cmd any) (*raft.RPCHeader, int, bool) {
	switch r := cmd.(type) {
	case *raft.AppendEntriesRequest:
		if isHeartbeat(r) {
			return &r.RPCHeader, labelHeartbeat, true
		}
		return &r.RPCHeader, labelAppendEntries, true
	case *raft.RequestVoteRequest:
		return &r.RPCHeader, labelRequestVote, true
	case *raft.RequestPreVoteRequest:
		return &r.RPCHeader, labelRequestPreVote, true
	case *raft.InstallSnapshotRequest:
		return &r.RPCHeader, labelInstallSnapshot, true
	case *raft.TimeoutNowRequest:
		return &r.RPCHeader, labelTimeoutNow, true
	}
	return nil, 0, false
}
