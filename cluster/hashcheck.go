package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Comparing replicas' state hashes (shard/hashcheck.go). When a hash check
// makes a local replica hash its state at index I, this node asks each
// other voter of the group for its hash at I (opHashAt: the peer waits
// until it has applied I and hashed it) and hands the tally to the replica
// (shard.Replica.HashVerdict): a hash that more than half of the voters
// computed is the group's; a replica with another one marks itself corrupt.
// Every replica runs the comparison for itself, so each decides only about
// itself and no verdict has to be sent anywhere; a corrupt replica needs no
// healthy one to tell it.

const (
	// hashCompareLimit bounds one comparison: peers that have not
	// applied and hashed the index by then are left out of the tally.
	hashCompareLimit = 30 * time.Second
	// hashCompareParallel bounds the comparisons running on a node; a
	// hash that finds no room is not compared (the next check is), and
	// counted in shardnet_cluster_hash_compares_skipped_total. Each
	// waits mostly on its peers: 32 dropped a third of the comparisons
	// of 1,000 channels checked every 10 s (TestIdleCost).
	hashCompareParallel = 256
)

// compareHash compares a local replica's hash at index with its peers', in
// the background (shard.Config.CompareHash).
func (n *Node) compareHash(r *shard.Replica, index, hash uint64) {
	n.inHashSlot(r.GroupID, index, func(ctx context.Context) {
		r.HashVerdict(n.tallyHashes(ctx, r, index, hash))
	})
}

// inHashSlot runs compare in the background in one of the node's
// hashCompareParallel slots, with a context that ends after
// hashCompareLimit or when the node stops; with no slot free it counts the
// comparison skipped.
func (n *Node) inHashSlot(gid, index uint64, compare func(ctx context.Context)) {
	select {
	case n.hashSem <- struct{}{}:
	default:
		n.metrics.hashComparesSkipped.Inc()
		n.log.Debug("too many hash comparisons running; skipping one", "group", gid, "index", index)
		return
	}
	go func() {
		defer func() { <-n.hashSem }()
		ctx, cancel := context.WithTimeout(context.Background(), hashCompareLimit)
		defer cancel()
		go func() {
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		compare(ctx)
	}()
}

// tallyHashes asks every other voter of r's group for its hash at index.
func (n *Node) tallyHashes(ctx context.Context, r *shard.Replica, index, hash uint64) shard.HashVerdict {
	peers, voters := r.Peers()
	return tally(index, hash, true, voters, n.askHashes(ctx, peers, r.GroupID, index))
}

// askHashes asks each of peers for its hash of group gid at index and
// returns the answers it got.
func (n *Node) askHashes(ctx context.Context, peers []raft.Server, gid, index uint64) map[raft.ServerID]uint64 {
	type answer struct {
		id   raft.ServerID
		hash uint64
		ok   bool
	}
	answers := make(chan answer, len(peers))
	for _, p := range peers {
		go func() {
			h, err := n.peerHashAt(ctx, string(p.Address), gid, index)
			if err != nil {
				n.log.Debug("no hash from a peer", "group", gid, "index", index, "peer", p.ID, "error", err)
			}
			answers <- answer{id: p.ID, hash: h, ok: err == nil}
		}()
	}
	got := map[raft.ServerID]uint64{}
	for range peers {
		if a := <-answers; a.ok {
			got[a.id] = a.hash
		}
	}
	return got
}

// tally decides from this replica's hash and the hashes its peers
// answered: the group's hash is one that more than half of the voters
// computed, if any. The replica's own hash counts only when it is a voter.
func tally(index, own uint64, voter bool, voters int, peers map[raft.ServerID]uint64) shard.HashVerdict {
	v := shard.HashVerdict{Index: index, Hash: own, Voters: voters, Answers: len(peers)}
	count := map[uint64]int{}
	if voter {
		count[own] = 1
		v.Answers++
	}
	for _, h := range peers {
		count[h]++
	}
	for h, c := range count {
		if 2*c > voters {
			v.Majority, v.Agree, v.Decided = h, c, true
		}
	}
	if v.Decided {
		for id, h := range peers {
			if h != v.Majority {
				v.Disagree = append(v.Disagree, id)
			}
		}
		slices.Sort(v.Disagree)
	}
	return v
}

// peerHashAt asks the node at addr for its replica's hash of group gid at
// index, again while it answers that it has not got there yet (its wait
// timed out) or does not answer, until ctx ends. Any other refusal ends
// the asking: the peer will never have that hash (fsm.ErrHashUnknown), does
// not host the group, or runs a version without the call.
func (n *Node) peerHashAt(ctx context.Context, addr string, gid, index uint64) (uint64, error) {
	pause := 50 * time.Millisecond
	for {
		h, err := n.route.hashAt(ctx, addr, gid, index)
		if err == nil {
			return h, nil
		}
		var cf *callFailedError
		if !errors.As(err, &cf) && !errors.Is(err, context.DeadlineExceeded) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// RepairReplica rebuilds node's replica of channel, which a hash check
// marked corrupt, from its leader's state, and returns the applied index
// it was rebuilt at: on this node, or through a call to that node.
func (n *Node) RepairReplica(ctx context.Context, channel, node string) (uint64, error) {
	var applied uint64
	err := n.route.do(ctx, "repair", func(ctx context.Context) (err error) {
		applied, err = n.repairReplica(ctx, channel, node)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		applied, err = n.route.repair(ctx, re, channel, node)
		return err
	})
	return applied, err
}

func (n *Node) repairReplica(ctx context.Context, channel, node string) (uint64, error) {
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		if err := n.metaSync(ctx); err != nil {
			return 0, fmt.Errorf("%w (looking for channel %q)", err, channel)
		}
		if ch, ok = n.meta.fsm.Channel(channel); !ok {
			return 0, fmt.Errorf("%w: %q", ErrChannelNotFound, channel)
		}
	}
	if node != n.cfg.Name {
		for _, nd := range n.placedNodes(ch) {
			if nd.ID == node {
				return 0, &shard.RedirectError{Err: shard.ErrNotHosted, NodeID: nd.ID, Addr: nd.ClusterAddr}
			}
		}
		return 0, fmt.Errorf("%w: node %q holds no replica of channel %q", ErrInvalidRequest, node, channel)
	}
	rep, ok := n.shards.Replica(ch.GroupID)
	if !ok {
		return 0, fmt.Errorf("%w: group %d", shard.ErrNotHosted, ch.GroupID)
	}
	if rep.Corrupt() == nil {
		return 0, fmt.Errorf("%w: channel %q on node %s", shard.ErrNotCorrupt, channel, node)
	}
	var err error
	for range 5 { // the replica may apply past the leader's snapshot meanwhile
		if !n.awaitLeader(ctx, rep, n.ClusterAddr()) {
			return 0, fmt.Errorf("%w: no other replica leads channel %q to rebuild from", shard.ErrNoLeader, channel)
		}
		var body io.ReadCloser
		if body, err = n.fetchSnapshot(ctx, rep); err != nil {
			return 0, err
		}
		if err = rep.Repair(body); !errors.Is(err, fsm.ErrSnapshotBehind) {
			break
		}
	}
	if err != nil {
		return 0, err
	}
	return rep.FSM().Applied(), nil
}

// fetchSnapshot asks rep's leader for a snapshot stream of its state at or
// after rep's applied index (rcSnapshot, a streamed answer).
func (n *Node) fetchSnapshot(ctx context.Context, rep *shard.Replica) (io.ReadCloser, error) {
	addr, leader := rep.Raft().LeaderWithID()
	return n.route.snapshot(ctx, string(addr), string(leader), rep.GroupID, rep.FSM().Applied())
}
