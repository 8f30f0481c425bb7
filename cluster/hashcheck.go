package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	// hash that finds no room is not compared (the next check is).
	hashCompareParallel = 32
)

// compareHash compares a local replica's hash at index with its peers', in
// the background (shard.Config.CompareHash).
func (n *Node) compareHash(r *shard.Replica, index, hash uint64) {
	select {
	case n.hashSem <- struct{}{}:
	default:
		n.log.Debug("too many hash comparisons running; skipping one", "group", r.GroupID, "index", index)
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
		r.HashVerdict(n.tallyHashes(ctx, r, index, hash))
	}()
}

// tallyHashes asks every other voter of r's group for its hash at index.
func (n *Node) tallyHashes(ctx context.Context, r *shard.Replica, index, hash uint64) shard.HashVerdict {
	peers, voters := r.Peers()
	type answer struct {
		id   raft.ServerID
		hash uint64
		ok   bool
	}
	answers := make(chan answer, len(peers))
	for _, p := range peers {
		go func() {
			h, err := n.peerHashAt(ctx, string(p.Address), r.GroupID, index)
			if err != nil {
				n.log.Debug("no hash from a peer", "group", r.GroupID, "index", index, "peer", p.ID, "error", err)
			}
			answers <- answer{id: p.ID, hash: h, ok: err == nil}
		}()
	}
	v := shard.HashVerdict{Index: index, Hash: hash, Voters: voters, Answers: 1}
	count := map[uint64]int{hash: 1}
	var got []answer
	for range peers {
		a := <-answers
		if a.ok {
			v.Answers++
			count[a.hash]++
			got = append(got, a)
		}
	}
	for h, c := range count {
		if 2*c > voters {
			v.Majority, v.Agree, v.Decided = h, c, true
		}
	}
	if v.Decided {
		for _, a := range got {
			if a.hash != v.Majority {
				v.Disagree = append(v.Disagree, a.id)
			}
		}
	}
	return v
}

// peerHashAt asks the node at addr for its replica's hash of group gid at
// index, again while it answers that it has not got there yet, until ctx
// ends. A peer that will never have that hash (fsm.ErrHashUnknown, or it
// does not host the group) ends the asking.
func (n *Node) peerHashAt(ctx context.Context, addr string, gid, index uint64) (uint64, error) {
	pause := 50 * time.Millisecond
	for {
		status, resp, err := n.calls.call(ctx, addr, opHashAt, binary.BigEndian.AppendUint64(callRequest(ctx, gid, 8), index))
		if err == nil && status == statusOK {
			if len(resp) != 8 {
				return 0, fmt.Errorf("cluster: hash from %s: answer of %d bytes", addr, len(resp))
			}
			return binary.BigEndian.Uint64(resp), nil
		}
		if err == nil {
			err = decodeCallError(resp)
			if errors.Is(err, fsm.ErrHashUnknown) || errors.Is(err, shard.ErrNotHosted) {
				return 0, err
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// serveHashAt answers this node's replica's hash at the index in body,
// waiting (within ctx) until the replica has applied and hashed it.
func serveHashAt(ctx context.Context, rep *shard.Replica, body []byte) (byte, []byte) {
	if len(body) != 8 {
		return statusErr, encodeCallError(fmt.Errorf("%w: hash call of %d bytes", ErrInvalidRequest, len(body)))
	}
	h, err := rep.FSM().HashAt(ctx, binary.BigEndian.Uint64(body))
	if err != nil {
		return statusErr, encodeCallError(err)
	}
	return statusOK, binary.BigEndian.AppendUint64(nil, h)
}
