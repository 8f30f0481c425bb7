package shard

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Proposal batching with a window of batches in flight per group.
//
// hashicorp/raft batches whatever proposals its leader loop finds queued
// when it wakes, and pipelines the batches; every batch pays for a leader
// append, an AppendEntries and a follower append per follower, an apply and
// a dozen goroutine hand-offs. A group's proposer lets at most window
// batches be in raft at once; the proposals that arrive meanwhile queue and
// go to raft together, back to back, when a batch is applied, so they land
// in one leader dispatch. With many writers on a group this cuts the Raft
// batches by a fifth to a third; with a few writers per group it cannot
// batch more than are in flight (docs/benchmarks.md). The acks of the
// previous batch clock the next one (as Nagle's algorithm, but never with
// a timer): a lone writer finds the window open and is not delayed at all.

// proposal is one Propose call's command on its way through the batcher.
type proposal struct {
	cmd      []byte
	deadline time.Time    // zero: none
	state    atomic.Int32 // proposalQueued, then proposalSent or proposalAbandoned
	future   raft.ApplyFuture
	err      error         // set before done is closed
	done     chan struct{} // closed once future (or err) is final
}

const (
	proposalQueued int32 = iota
	proposalSent
	proposalAbandoned // its caller gave up before it was sent
)

// batcher is one group's proposal queue.
type batcher struct {
	r      *Replica
	window int

	mu       sync.Mutex
	inflight int         // batches handed to raft and not yet applied
	queue    []*proposal // waiting for a free slot

	batches atomic.Uint64 // batches sent, for tests (the metric sums all groups)
}

// submit hands p to raft now if the window has room (the caller's goroutine
// drives the batch) or queues it for the next batch.
func (b *batcher) submit(p *proposal) {
	b.mu.Lock()
	if b.inflight < b.window {
		b.inflight++
		b.mu.Unlock()
		b.drive([]*proposal{p})
		return
	}
	b.queue = append(b.queue, p)
	b.mu.Unlock()
}

// drive sends one batch to raft, waits until every entry of it is answered,
// and then starts the next batch from the queue, if any, on a goroutine of
// its own so that the caller, whose proposal is answered, can return.
func (b *batcher) drive(batch []*proposal) {
	sent := batch[:0]
	for _, p := range batch {
		if !p.state.CompareAndSwap(proposalQueued, proposalSent) {
			continue // abandoned while queued: never sent, already answered
		}
		p.future = b.r.raft.Apply(p.cmd, enqueueTimeoutUntil(p.deadline))
		sent = append(sent, p)
	}
	if len(sent) > 0 {
		b.batches.Add(1)
		b.r.m.metrics.proposalBatches.Inc()
	}
	b.r.awaitAll(sent)
	for _, p := range sent {
		close(p.done)
	}

	b.mu.Lock()
	next := b.queue
	b.queue = nil
	if len(next) == 0 {
		b.inflight--
	}
	b.mu.Unlock()
	if len(next) > 0 {
		go b.drive(next)
	}
}

// awaitAll sets p.err for every proposal of a sent batch once raft answered
// its future, or, if the replica stops first, raft.ErrRaftShutdown for those
// not answered yet (see wait: raft never answers futures queued at
// shutdown). One goroutine waits for the whole batch: raft answers a
// group's futures in log order.
func (r *Replica) awaitAll(ps []*proposal) {
	if len(ps) == 0 {
		return
	}
	errs := make([]error, len(ps))
	var answered atomic.Int64 // errs[:answered] are final
	finished := make(chan struct{})
	go func() {
		for i, p := range ps {
			errs[i] = p.future.Error()
			answered.Add(1)
		}
		close(finished)
	}()
	n := len(ps)
	select {
	case <-finished:
	case <-r.done:
		select {
		case <-finished:
		default:
			n = int(answered.Load())
		}
	}
	for i, p := range ps {
		if i < n {
			p.err = errs[i]
		} else {
			p.err = raft.ErrRaftShutdown
		}
	}
}
