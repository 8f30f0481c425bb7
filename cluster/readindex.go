package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/shardnet/shardnet/shard"
)

// Follower reads (DESIGN decision 7: "a follower that receives it forwards
// it or waits for the leader's read index"). A linearizable read that lands
// on a follower asks the leader for a read index instead of forwarding the
// whole request: the leader confirms its leadership (shard.ReadIndex: a
// heartbeat round, no log write) and answers its commit index; once the
// follower knows that index committed and its state machine has applied
// every entry up to it (shard.WaitIndex), its own state holds every write
// acknowledged, or served by any replica, before the read began, and it
// answers from it. Not the leader's applied index: a follower can apply an
// entry before the leader's state machine does.
//
// Concurrent reads on a follower share one read-index call, as etcd's
// linearizableReadLoop does, but only reads that arrived before the call was
// sent: the leader's confirmation must come after the read began.
//
// A follower that has not applied that far within followerReadWait (it has
// not heard the commit index yet: idle groups learn it only every
// CommitTimeout) forwards the request as before.

// followerReadWait bounds how long a follower waits to apply up to a read
// index whose entries it already has.
const followerReadWait = 3 * time.Millisecond

type readIndexResult struct {
	index uint64
	err   error
}

// readIndexBatch coalesces the read-index calls of one group on this node.
type readIndexBatch struct {
	mu       sync.Mutex
	waiting  []chan readIndexResult
	inflight bool
}

func (b *readIndexBatch) get(ctx context.Context, fetch func() (uint64, error)) (uint64, error) {
	ch := make(chan readIndexResult, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, ch)
	if !b.inflight {
		b.inflight = true
		go b.run(fetch)
	}
	b.mu.Unlock()
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (b *readIndexBatch) run(fetch func() (uint64, error)) {
	for {
		b.mu.Lock()
		batch := b.waiting
		b.waiting = nil
		if len(batch) == 0 {
			b.inflight = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		idx, err := fetch() // sent after every read of the batch arrived
		for _, c := range batch {
			c <- readIndexResult{idx, err}
		}
	}
}

// followerRead tries to make a linearizable read servable by this follower
// replica; an error means: forward as redirected.
func (n *Node) followerRead(ctx context.Context, rep *shard.Replica, leader *shard.RedirectError) error {
	v, _ := n.readBatches.LoadOrStore(rep.GroupID, &readIndexBatch{})
	idx, err := v.(*readIndexBatch).get(ctx, func() (uint64, error) {
		return n.remoteReadIndex(context.Background(), leader.Addr, rep.GroupID) // bounded by internalCallLimit
	})
	if err != nil {
		return err
	}
	if rep.FSM().Applied() >= idx {
		n.metrics.followerReads.WithLabelValues("local").Inc()
		return nil
	}
	if rep.Raft().LastIndex() >= idx {
		// The entries are here; the commit index is on its way.
		wctx, cancel := context.WithTimeout(ctx, followerReadWait)
		err := rep.WaitIndex(wctx, idx)
		cancel()
		if err == nil {
			n.metrics.followerReads.WithLabelValues("waited").Inc()
			return nil
		}
	}
	n.metrics.followerReads.WithLabelValues("forwarded").Inc()
	return errors.New("cluster: follower behind the read index")
}
