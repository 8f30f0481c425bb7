package cluster

import (
	"context"
	"slices"
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
	channels := map[uint64]fsm.ChannelRecord{}
	for _, ch := range n.meta.fsm.Channels() {
		channels[ch.GroupID] = ch
		r, ok := placedReplica(ch, n.cfg.Name)
		if !ok {
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
		spec, ok := n.replicaSpec(ch, r)
		if !ok {
			continue
		}
		rep, err := n.shards.Ensure(spec)
		if err != nil {
			n.log.Error("start replica", "channel", ch.Name, "group", ch.GroupID, "error", err)
			continue
		}
		n.log.Debug("replica started", "channel", ch.Name, "group", ch.GroupID, "bootstrap", len(spec.Peers) > 0)
		if len(spec.Peers) == 0 {
			// Added by scaling or repair: it gets its chunks once it
			// has the channel's manifests (antientropy.go).
			n.wg.Add(1)
			go n.healAdded(rep)
		}
	}
	// The leaders' answers below take a call each: bounded per pass, so
	// that a leader that does not answer delays the next pass (the
	// replicas it starts) by at most this; the rest wait for a later pass.
	ctx, cancel := context.WithTimeout(context.Background(), internalCallLimit)
	defer cancel()
	for _, r := range n.shards.Replicas() {
		if want[r.GroupID] {
			continue
		}
		if ch, ok := channels[r.GroupID]; ok {
			// The channel lives on without this node: a removed replica
			// is never told, so delete it only once the group's leader
			// says its committed configuration no longer lists it
			// (cluster/DESIGN.md "Membership changes").
			if ctx.Err() != nil || !n.removedHere(ctx, r, ch) {
				continue
			}
			n.log.Info("removing replica: the group's leader no longer lists it", "channel", r.Channel, "group", r.GroupID)
		} else {
			created, ok := n.shards.MetaIndex(r.GroupID)
			if !ok || applied <= created {
				continue
			}
			n.log.Info("removing replica of a deleted channel", "channel", r.Channel, "group", r.GroupID)
		}
		if err := n.shards.Remove(r.GroupID); err != nil {
			n.log.Error("remove replica", "group", r.GroupID, "error", err)
		}
	}
}

// placedReplica returns the channel's replica on node, if it has one.
func placedReplica(ch fsm.ChannelRecord, node string) (fsm.Replica, bool) {
	for _, r := range ch.Placement {
		if r.NodeID == node {
			return r, true
		}
	}
	return fsm.Replica{}, false
}

// replicaSpec is how this node starts its placed replica r of ch, which it
// does not run (ok false: not now).
//
// Only a replica of the placement the channel was created with bootstraps
// the group, and with exactly that placement as voters: every creation
// replica writes the same first entry, which hashicorp/raft allows. Any
// other replica starts empty and waits for the leader to add it
// (membership.go); one that bootstrapped would write a configuration of
// its own at term 1 and split the group. A placement naming another
// incarnation of this node (its data directory was wiped since) starts
// nothing until the meta leader renews it (renewIncarnations).
func (n *Node) replicaSpec(ch fsm.ChannelRecord, r fsm.Replica) (shard.ReplicaSpec, bool) {
	spec := shard.ReplicaSpec{GroupID: ch.GroupID, Channel: ch.Name, MetaIndex: ch.CreateIndex}
	if raft.ServerID(r.ServerID) != n.serverID {
		return spec, false
	}
	created := ch.CreationPlacement()
	if r.Added != 0 || !slices.Contains(created, r) {
		return spec, true // join
	}
	for _, c := range created {
		nd, ok := n.meta.fsm.Node(c.NodeID)
		if !ok {
			return spec, false
		}
		spec.Peers = append(spec.Peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(c.ServerID), Address: raft.ServerAddress(nd.ClusterAddr)})
	}
	return spec, true
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
