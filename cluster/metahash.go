package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/shardnet/shardnet/shard"
)

// The meta group's hash check (the channels' is in hashcheck.go): every
// hash check interval the meta leader proposes an fsm.MetaHashCheck;
// applying it makes every copy of the meta state hash itself: voters,
// non-voters and the resource nodes that follow it by watch alike (their
// copies apply the same entries, metafollow.go); each node compares its hash with the meta voters' (opHashAt on group 0) and
// decides about itself by the same majority rule (tally). A node whose
// copy differs logs it at error once, counts it
// (shardnet_cluster_meta_hash_mismatches_total) and answers not ready
// (GET /v1/health?ready=1: 503) from then on: a load balancer stops
// sending it clients. It still routes with its copy; a restart rebuilds
// the copy from the meta log and snapshots, and clears the mark (a node
// that follows by watch deletes the copy it keeps on disk, so that its
// restart fetches the state again).

// metaHashDue says whether the meta leader should propose a hash check now,
// and schedules the next one. Called from the leader loop only.
func (n *Node) metaHashDue(now time.Time) bool {
	every := n.cfg.HashCheckInterval
	if every == 0 {
		every = shard.DefaultHashCheckInterval
	}
	if every < 0 {
		return false
	}
	if n.nextMetaCheck.IsZero() {
		n.nextMetaCheck = now.Add(every)
		return false
	}
	if now.Before(n.nextMetaCheck) {
		return false
	}
	n.nextMetaCheck = now.Add(every)
	return true
}

// compareMetaHash compares this node's hash of the meta state at index with
// the meta voters', in the background (fsm.Meta.SetOnHash).
func (n *Node) compareMetaHash(index, hash uint64) {
	if !n.started.Load() {
		return // replayed at boot: too late to compare
	}
	n.inHashSlot(metaGroupID, index, func(ctx context.Context) {
		// A node that follows the meta state by watch knows the voters
		// from its watch: it compares its copy with theirs as a
		// non-voter did, its own hash not counting.
		voters, voter := 0, false
		var peers []raft.Server
		for _, s := range n.metaVoters() {
			voters++
			if s.ID == n.serverID {
				voter = true
			} else {
				peers = append(peers, s)
			}
		}
		n.metaHashVerdict(tally(index, hash, voter, voters, n.askHashes(ctx, peers, metaGroupID, index)))
	})
}

// metaHashVerdict acts on a comparison of this node's meta hash.
func (n *Node) metaHashVerdict(v shard.HashVerdict) {
	switch {
	case !v.Decided:
		n.metrics.metaHashCompares.WithLabelValues("undecided").Inc()
	case v.Hash == v.Majority:
		n.metrics.metaHashCompares.WithLabelValues("agree").Inc()
	default:
		n.metrics.metaHashCompares.WithLabelValues("mismatch").Inc()
		c := &shard.Corruption{Index: v.Index, Hash: v.Hash, Majority: v.Majority, Agree: v.Agree, At: time.Now()}
		if n.metaCorrupt.CompareAndSwap(nil, c) {
			n.metrics.metaHashMismatches.Inc()
			n.log.Error("this node's copy of the meta state differs from the meta group's: it answers not ready until restarted",
				"index", v.Index, "hash", fmt.Sprintf("%016x", v.Hash), "majority_hash", fmt.Sprintf("%016x", v.Majority), "agree", v.Agree)
		}
	}
}
