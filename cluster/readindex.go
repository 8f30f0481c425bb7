package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/shard"
)

// Follower reads (docs/design.md "D7": "a follower that receives it forwards
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
//
// Each call goes to the leader the local replica knows when the call is
// sent, never to one a caller saw earlier: a follower kept asking the first
// caller's leader for as long as reads kept arriving, so after that leader's
// node stopped answering (SIGSTOP) every read through that follower failed
// for 18 s while writes worked again after 2. A call to a leader that does
// not answer is dropped as soon as the local replica knows another leader,
// and any failed call is sent again to the leader as then known, within the
// deadline of the reads waiting for it: a read index has no side effect, so
// asking twice is harmless. If this replica is elected meanwhile it takes
// the read index itself.

// followerReadWait bounds how long a follower waits to apply up to a read
// index whose entries it already has.
const followerReadWait = 3 * time.Millisecond

// errLeaderMoved ends a read-index call once the local replica knows
// another leader than the one asked.
var errLeaderMoved = errors.New("cluster: the leader changed during the read-index call")

type readIndexResult struct {
	index uint64
	err   error
}

// readIndexBatch coalesces the read-index calls of one replica on this
// node.
type readIndexBatch struct {
	mu       sync.Mutex
	waiting  []chan readIndexResult
	deadline time.Time // the latest deadline of the waiting reads
	endless  bool      // a waiting read has no deadline
	inflight bool
}

func (b *readIndexBatch) get(ctx context.Context, fetch func(context.Context) (uint64, error)) (uint64, error) {
	ch := make(chan readIndexResult, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, ch)
	if dl, ok := ctx.Deadline(); !ok {
		b.endless = true
	} else if dl.After(b.deadline) {
		b.deadline = dl
	}
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

// run fetches for one batch after another until no read waits. A fetch may
// take as long as the latest deadline of its batch (at most
// internalCallLimit): the reads with earlier deadlines leave when theirs
// pass.
func (b *readIndexBatch) run(fetch func(context.Context) (uint64, error)) {
	for {
		b.mu.Lock()
		batch, deadline, endless := b.waiting, b.deadline, b.endless
		b.waiting, b.deadline, b.endless = nil, time.Time{}, false
		if len(batch) == 0 {
			b.inflight = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		limit := time.Now().Add(internalCallLimit)
		if !endless && deadline.Before(limit) {
			limit = deadline
		}
		ctx, cancel := context.WithDeadline(context.Background(), limit)
		idx, err := fetch(ctx) // sent after every read of the batch arrived
		cancel()
		for _, c := range batch {
			c <- readIndexResult{idx, err}
		}
	}
}

// followerRead tries to make a linearizable read servable by this replica,
// which did not lead when the read arrived; an error means: forward to the
// leader.
func (n *Node) followerRead(ctx context.Context, rep *shard.Replica) error {
	// Keyed by the replica, not its group: a fetch belongs to the replica
	// it started for.
	v, _ := n.readBatches.LoadOrStore(rep, &readIndexBatch{})
	idx, err := v.(*readIndexBatch).get(ctx, func(ctx context.Context) (uint64, error) {
		return n.fetchReadIndex(ctx, rep)
	})
	if err != nil {
		return err
	}
	if rep.FSM().Applied() >= idx {
		n.metrics.followerReads.WithLabelValues("local").Inc()
		return nil
	}
	if rep.Raft().State() == raft.Leader {
		// Elected meanwhile: it waits for its own state machine, as any
		// leader does.
		return rep.WaitIndex(ctx, idx)
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

// fetchReadIndex gets a read index for rep's group from the leader rep
// knows now (itself, if it leads), and again from the leader it knows then
// whenever a call fails, until ctx ends.
func (n *Node) fetchReadIndex(ctx context.Context, rep *shard.Replica) (uint64, error) {
	for {
		addr, id := rep.Raft().LeaderWithID()
		var idx uint64
		var err error
		switch {
		case rep.Raft().State() == raft.Leader:
			idx, err = rep.ReadIndex(ctx)
			addr = "" // if it lost the leadership, any leader will do
		case id == "":
			err = shard.ErrNoLeader
		default:
			idx, err = n.readIndexFrom(ctx, rep, string(addr))
		}
		if err == nil {
			return idx, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
		n.metrics.readIndexRetries.Inc()
		// Wait for a leader other than the one that failed (or any, if
		// none was known); after leaderWait, ask the same one again.
		if !n.awaitLeader(ctx, rep, string(addr)) && ctx.Err() != nil {
			return 0, err
		}
	}
}

// readIndexFrom asks the leader at addr for a read index of rep's group,
// and gives up on it (errLeaderMoved) once rep knows another leader: a
// leader that stopped answering (a paused process, a partition) holds a
// call until its deadline.
func (n *Node) readIndexFrom(ctx context.Context, rep *shard.Replica, addr string) (uint64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if now, _ := rep.Raft().LeaderWithID(); string(now) != addr {
					cancel(errLeaderMoved)
					return
				}
			}
		}
	}()
	idx, err := n.route.readIndex(ctx, addr, rep.GroupID)
	if err != nil && errors.Is(context.Cause(ctx), errLeaderMoved) {
		return 0, errLeaderMoved
	}
	return idx, err
}

// readIndex (rcReadIndex): head gid u64; answer the leader's commit index,
// confirmed, u64 (the follower then waits for its own state machine:
// shard.Replica.ReadIndex).
func (r *router) readIndex(ctx context.Context, addr string, gid uint64) (uint64, error) {
	head, err := r.simple(ctx, "readindex", addr, rcReadIndex, u64(gid))
	if errors.Is(err, errPreviousVersion) {
		return r.legacyIndex(ctx, addr, opReadIndex, gid)
	}
	if err != nil {
		return 0, fmt.Errorf("cluster: read index from %s: %w", addr, err)
	}
	return readU64(head, "read index")
}

func (r *router) serveReadIndex(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	gid, err := readU64(head, "read index call")
	if err != nil {
		return nil, nil, err
	}
	rep, ok := r.n.shards.Replica(gid)
	if !ok {
		return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	if err := r.n.servedReplica(ctx, rep); err != nil {
		return nil, nil, err
	}
	idx, err := rep.ReadIndex(ctx)
	if err != nil {
		return nil, nil, err
	}
	return u64(idx), nil, nil
}
