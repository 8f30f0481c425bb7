package cluster

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// runReconciler makes this node run exactly the replicas the committed meta
// state places on it. It reads the local meta FSM (committed, maybe a little
// behind) and never removes a replica on the word of a meta state older than
// the placement that created it (docs/design.md "D9").
func (n *Node) runReconciler() {
	defer n.wg.Done()
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	for {
		changed := n.meta.fsm.Changed()
		n.reconcile()
		select {
		case <-n.stop:
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func (n *Node) reconcile() {
	applied := n.meta.fsm.Applied()
	if applied == 0 {
		return // nothing known yet; local replicas keep running
	}
	if n.metaSound() != nil {
		// A copy a hash check found different must not start or remove
		// replicas: the ones running keep running until a restart
		// rebuilds the copy.
		return
	}
	want := map[uint64]bool{}
	for _, ch := range n.meta.fsm.Channels() {
		if !ch.HasNode(n.cfg.Name) {
			continue
		}
		want[ch.GroupID] = true
		if _, ok := n.shards.Replica(ch.GroupID); ok {
			continue
		}
		if _, busy := n.seeding.Load(ch.GroupID); busy {
			continue // being seeded, or retired by a recovery (backup.go, recover.go)
		}
		if ch.Restore != nil {
			// Seeded from a backup, not bootstrapped (backup.go).
			n.startRestored(ch)
			continue
		}
		spec := shard.ReplicaSpec{GroupID: ch.GroupID, Channel: ch.Name, MetaIndex: ch.CreateIndex}
		for _, r := range ch.Placement {
			nd, ok := n.meta.fsm.Node(r.NodeID)
			if !ok {
				spec.Peers = nil
				break
			}
			spec.Peers = append(spec.Peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(r.ServerID), Address: raft.ServerAddress(nd.ClusterAddr)})
		}
		if len(spec.Peers) == 0 {
			continue
		}
		if _, err := n.shards.Ensure(spec); err != nil {
			n.log.Error("start replica", "channel", ch.Name, "group", ch.GroupID, "error", err)
			continue
		}
		n.log.Debug("replica started", "channel", ch.Name, "group", ch.GroupID)
	}
	for _, r := range n.shards.Replicas() {
		if want[r.GroupID] {
			continue
		}
		created, ok := n.shards.MetaIndex(r.GroupID)
		if !ok || applied <= created {
			continue
		}
		n.log.Info("removing replica no longer placed here", "channel", r.Channel, "group", r.GroupID)
		if err := n.shards.Remove(r.GroupID); err != nil {
			n.log.Error("remove replica", "group", r.GroupID, "error", err)
		}
	}
}

// placedServers lists a channel's replicas with their cluster addresses.
func (n *Node) placedNodes(ch fsm.ChannelRecord) []fsm.NodeRecord {
	var out []fsm.NodeRecord
	for _, r := range ch.Placement {
		if nd, ok := n.meta.fsm.Node(r.NodeID); ok {
			out = append(out, nd)
		}
	}
	return out
}
