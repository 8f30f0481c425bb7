package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/shard"
)

// Reads of the control plane that must not be stale. Every node holds a
// committed copy of the meta state (resource nodes through a meta watch,
// metafollow.go, or as non-voters before cluster version 5), and
// answers most requests from it. But a copy can trail the meta group: a
// node that has not heard the commit index yet (after a restart, until the
// leader's first append), or has not applied it, does not know a channel
// created a moment ago, and answered 503 not_ready or 404 to writes that
// came right after the create's 201 (through another node). So before a
// node says a channel does not exist, it does what a linearizable read of
// the meta group needs (the read-index recipe of the channel groups,
// shard/DESIGN.md "Read levels"): it asks the meta leader for its commit
// index, confirmed by a heartbeat round (one barrier per term first),
// waits until its own raft has handed every entry up to that index to the
// meta state machine, and then until the state machine has applied the
// last command at or below it (the meta FSM sees commands only: no-ops,
// barriers and configuration entries never reach it). Then its copy holds
// every channel whose creation was acknowledged before the request
// arrived. All within the request's deadline (at most internalCallLimit);
// 503 not_ready remains only for a node that cannot reach a meta leader.
//
// Concurrent syncs share one call (readIndexBatch), like follower reads.

// metaReadIndex returns a read index of the meta group: the meta leader's
// commit index, confirmed. It asks the leader this node knows, itself
// included, and again whoever it knows then when that fails.
func (n *Node) metaReadIndex(ctx context.Context) (uint64, error) {
	for {
		addr, id := n.metaLeader()
		var idx uint64
		var err error
		switch {
		case n.meta.raft.State() == raft.Leader:
			idx, err = n.localMetaReadIndex(ctx)
			addr = "" // if it lost the leadership, any leader will do
		case id == "":
			err = ErrNoMetaLeader
		default:
			idx, err = n.route.metaReadIndex(ctx, string(addr))
		}
		if err == nil {
			return idx, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
		// Wait for a meta leader other than the one that failed (any, if
		// none was known); after leaderWait, ask the same one again.
		if !n.waitFor(ctx, 10*time.Millisecond, func() bool {
			now, nid := n.metaLeader()
			return nid != "" && now != addr
		}) && ctx.Err() != nil {
			return 0, err
		}
	}
}

// localMetaReadIndex is metaReadIndex on the meta leader: one Barrier per
// term (a fresh leader's commit index can trail what the old one
// acknowledged), then the commit index, confirmed in the same term by
// answers to messages sent after it was taken (shard.ConfirmLeadership).
func (n *Node) localMetaReadIndex(ctx context.Context) (uint64, error) {
	r := n.meta.raft
	if r.State() != raft.Leader {
		return 0, n.metaRedirect()
	}
	term := r.CurrentTerm()
	if n.meta.readyTerm.Load() != term {
		if err := n.awaitFuture(ctx, r.Barrier(internalCallLimit)); err != nil {
			return 0, fmt.Errorf("cluster: meta barrier: %w", err)
		}
		if r.CurrentTerm() != term {
			return 0, ErrNoMetaLeader
		}
		n.meta.readyTerm.Store(term)
	}
	idx := r.CommitIndex()
	// Confirmed only by answers to messages sent after the index was taken,
	// as channel groups confirm theirs: meta survivors stand at once too.
	if err := shard.ConfirmLeadership(ctx, r, n.meta.trans, term, time.Now(), n.stop, nil); err != nil {
		if errors.Is(err, shard.ErrNoLeader) {
			return 0, ErrNoMetaLeader
		}
		return 0, fmt.Errorf("cluster: meta verify leader: %w", err)
	}
	return idx, nil
}

// awaitFuture waits for f, ctx or the node's stop, whichever comes first
// (raft never answers a future queued when it shuts down).
func (n *Node) awaitFuture(ctx context.Context, f raft.Future) error {
	return shard.AwaitFuture(ctx, f, n.stop)
}

// metaSync returns once this node's copy of the meta state holds every
// entry the meta group committed before the call, or an error wrapping
// ErrNotReady when no meta leader could be reached (or ctx ended first).
func (n *Node) metaSync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, internalCallLimit)
	defer cancel()
	start := time.Now()
	idx, err := n.metaReads.get(ctx, n.metaReadIndex)
	if err != nil {
		n.metrics.metaSyncs.WithLabelValues("unreachable").Inc()
		return fmt.Errorf("%w: no meta leader answered to confirm it: %v", ErrNotReady, err)
	}
	if err := n.waitMetaApplied(ctx, idx); err != nil {
		n.metrics.metaSyncs.WithLabelValues("behind").Inc()
		if errors.Is(err, context.DeadlineExceeded) {
			n.follow.switchCore()
		}
		return fmt.Errorf("%w: it has not applied the meta leader's commit index %d yet: %v", ErrNotReady, idx, err)
	}
	n.metrics.metaSyncs.WithLabelValues("ok").Inc()
	n.metrics.metaSyncSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// seeMetaWrite, after a meta write the meta leader acknowledged (err nil),
// has this node's copy of the meta state catch up with the leader before
// the client hears of it: a client that uses the token it was just given,
// or the channel it just created, through the same node finds it there.
// Best effort: the write is done whatever this says, so a node that cannot
// catch up in time still answers success (and the client may then meet
// the bound docs/api.md "Authentication" describes).
func (n *Node) seeMetaWrite(ctx context.Context, err error) error {
	if err != nil {
		return err
	}
	if err := n.metaSync(ctx); err != nil {
		n.log.Debug("acknowledged meta write not applied here yet", "error", err)
	}
	return nil
}

// waitMetaApplied waits until the meta state machine has applied every
// committed command at or below idx.
func (n *Node) waitMetaApplied(ctx context.Context, idx uint64) error {
	if n.meta.fsm.Applied() >= idx {
		return nil
	}
	if n.follow.watching.Load() {
		return n.waitFollowed(ctx, idx)
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	// errWatching: the node switched to the meta watch during the wait. A
	// resource node removed from the meta group never hears the commit of
	// the entry that removed it, so its Raft path would wait in vain.
	errWatching := errors.New("switched to the meta watch")
	wait := func(done func() bool) error {
		for !done() {
			if n.follow.watching.Load() {
				return errWatching
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-n.stop:
				return ErrNoMetaLeader
			case <-n.meta.fsm.Changed():
			case <-tick.C:
			}
		}
		return nil
	}
	// raft's AppliedIndex: every entry up to it was handed to the state
	// machine, so this node knows it committed (docs/raft-notes.md "R2": it is
	// not what the state machine has applied).
	err := wait(func() bool { return n.meta.raft.AppliedIndex() >= idx })
	if err == nil {
		var target uint64
		if target, err = n.meta.lastCommand(idx); err == nil {
			err = wait(func() bool { return n.meta.fsm.Applied() >= target })
		}
	}
	if errors.Is(err, errWatching) {
		return n.waitFollowed(ctx, idx)
	}
	return err
}

// waitFollowed is waitMetaApplied on a node that follows the meta state by
// watch: the watch's progress says every entry up to it is applied.
func (n *Node) waitFollowed(ctx context.Context, idx uint64) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n.follow.progress.Load() < idx {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrNoMetaLeader
		case <-tick.C:
		}
	}
	return nil
}

// lastCommand returns the largest index at or below idx of a command entry
// (the only kind the meta state machine is handed), or 0 when the log holds
// none there: entries compacted behind a snapshot are in the state machine
// already (it restored or took that snapshot). The meta log is small and
// sees a no-op and a barrier per term and a few configuration changes per
// node joining, so this walks back a few entries; the answer for one
// committed index never changes, so the last one is kept.
func (m *metaGroup) lastCommand(idx uint64) (uint64, error) {
	if c := m.lastCmd.Load(); c != nil && c[0] == idx {
		return c[1], nil
	}
	first, err := m.logs.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("cluster: meta log: %w", err)
	}
	target := uint64(0)
	var l raft.Log
	for i := idx; i >= first && i > 0; i-- {
		err := m.logs.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			break // compacted meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("cluster: meta log entry %d: %w", i, err)
		}
		if l.Type == raft.LogCommand {
			target = i
			break
		}
	}
	m.lastCmd.Store(&[2]uint64{idx, target})
	return target, nil
}

// metaReadState is what metaGroup keeps for meta read indexes.
type metaReadState struct {
	readyTerm atomic.Uint64             // the term in which a Barrier completed (as leader)
	lastCmd   atomic.Pointer[[2]uint64] // lastCommand's last answer
}
