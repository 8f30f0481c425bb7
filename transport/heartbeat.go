package transport

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Heartbeat batching (idle cost, docs/raft-notes.md "R7"). Every group's leader sends
// each follower a heartbeat every HeartbeatTimeout/10 to /5; a node with a
// thousand idle groups sends thousands a second, each its own frame, write
// syscall, wake-up and answer on both sides: most of an idle node's CPU
// (profiled: ~30 % of it in write syscalls alone). With Config.HeartbeatBatch
// set, a heartbeat waits up to that long for the other heartbeats going to
// the same peer and they travel as one typeHeartbeats frame; the peer runs
// each group's heartbeat handler in turn and answers them in one frame.
// A heartbeat of a group with quiet heartbeats waits longer (quietBatchShare)
// and may be answered locally instead (quiet.go); any other makes the round
// trip.
//
// A heartbeat that confirms leadership for a read (VerifyLeader) must not
// wait: GroupTransport.Urgent, called before VerifyLeader, sends the group's
// heartbeats on their own for a while and flushes what is queued.

// maxHeartbeatBatch bounds one batch frame (a heartbeat is ~40 bytes).
const maxHeartbeatBatch = 512

// urgentFor is how long after Urgent a group's heartbeats skip batching.
const urgentFor = 2 * time.Second

// Urgent makes the group's heartbeats go out at once and on the wire for a
// while, neither batched nor answered locally (quiet.go): its leader is
// about to confirm leadership for a read (VerifyLeader).
func (g *GroupTransport) Urgent() {
	until := time.Now().Add(urgentFor).UnixNano()
	if g.urgent.Swap(until) > time.Now().UnixNano() || g.node.cfg.HeartbeatBatch <= 0 {
		return // already urgent, or unbatched: nothing of ours is queued
	}
	g.node.batchersMu.Lock()
	bs := make([]*hbBatcher, 0, len(g.node.batchers))
	for _, b := range g.node.batchers {
		bs = append(bs, b)
	}
	g.node.batchersMu.Unlock()
	for _, b := range bs {
		if b.holds(g) {
			go b.flush()
		}
	}
}

// DeliverLocal hands cmd to this node's own replica of the group as if a
// peer had sent it, and returns its answer: the way the layer above starts
// an election at once (a TimeoutNowRequest) when the prober says the
// group's leader is gone (shard/failover.go).
func (g *GroupTransport) DeliverLocal(cmd any) (any, error) {
	if g.isClosed() {
		return nil, g.errClosed()
	}
	return g.dispatch(cmd, nil, false, g.node.cfg.RPCTimeout)
}

func (g *GroupTransport) isUrgent() bool { return g.urgent.Load() > time.Now().UnixNano() }

// hbBatcher queues the heartbeats for one peer.
type hbBatcher struct {
	n       *Node
	target  raft.ServerAddress
	mu      sync.Mutex
	pending []*hbCall
	timer   *time.Timer // runs flush at due; nil until the first batch
	due     time.Time
}

// quietBatchShare: a heartbeat of a group with quiet heartbeats waits up
// to this share of its quiet interval for others going the same way (156
// ms of the channels' 1.25 s), where other groups' wait Config.HeartbeatBatch.
// Such a heartbeat is due at the follower within its heartbeat timeout,
// not within the lease, and an idle node's cost is counted in frames:
// each is a write and a wake-up on both sides, whatever it carries
// (docs/benchmarks.md "Quiet heartbeats"). A heartbeat that must be quick
// shortens the wait of the batch it joins.
const quietBatchShare = 8

type hbCall struct {
	g    *GroupTransport
	req  []byte // the encoded AppendEntriesRequest
	done chan hbResult
}

type hbResult struct {
	body  []byte
	sent  time.Time // when the batch went out
	epoch uint64    // the session it went out on, as noteFollower takes it
	err   error
}

func (n *Node) batcher(target raft.ServerAddress) *hbBatcher {
	n.batchersMu.Lock()
	defer n.batchersMu.Unlock()
	b, ok := n.batchers[target]
	if !ok {
		b = &hbBatcher{n: n, target: target}
		n.batchers[target] = b
	}
	return b
}

func (b *hbBatcher) holds(g *GroupTransport) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.pending {
		if c.g == g {
			return true
		}
	}
	return false
}

// heartbeat queues one heartbeat and waits for its answer.
func (b *hbBatcher) heartbeat(g *GroupTransport, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	n := b.n
	n.metrics.sent[labelHeartbeat].Inc()
	if g.isClosed() {
		return g.errClosed()
	}
	c := &hbCall{g: g, req: appendAppendEntriesRequest(make([]byte, 0, appendEntriesSizeHint(args)), args), done: make(chan hbResult, 1)}
	wait := n.cfg.HeartbeatBatch
	if every := time.Duration(g.quietBeat.Load()); every/quietBatchShare > wait {
		wait = every / quietBatchShare
	}
	due := time.Now().Add(wait)
	b.mu.Lock()
	b.pending = append(b.pending, c)
	switch {
	case len(b.pending) >= maxHeartbeatBatch:
		go b.flush()
	case len(b.pending) == 1 || due.Before(b.due):
		b.due = due
		if b.timer == nil {
			b.timer = time.AfterFunc(wait, b.flush)
		} else {
			b.timer.Reset(wait) // a flush it would have run finds nothing: harmless
		}
	}
	b.mu.Unlock()
	// No timer of its own (one per heartbeat was a visible share of an idle
	// node's CPU): the flush always answers, within the exchange's
	// RPCTimeout deadlines.
	select {
	case r := <-c.done:
		if r.err != nil {
			g.forgetFollower(b.target)
			return r.err
		}
		if err := decodeAppendEntriesResponse(r.body, resp); err != nil {
			return err
		}
		// A heartbeat's answer carries the follower's last log index too:
		// the rebalancer's "is the target caught up" then stays fresh in
		// groups that take no writes.
		g.noteFollower(b.target, args, r.sent, r.epoch, resp)
		return nil
	case <-g.closed:
		return g.errClosed()
	}
}

// flush sends what is queued as one frame and hands each caller its answer.
func (b *hbBatcher) flush() {
	b.mu.Lock()
	calls := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(calls) == 0 {
		return
	}
	b.n.metrics.heartbeatBatches.Inc()
	size := binary.MaxVarintLen64
	for _, c := range calls {
		size += 2*binary.MaxVarintLen64 + len(c.req)
	}
	sent := time.Now()
	var epoch uint64
	body, err := b.n.roundTrip(b.target, nil, 0, typeHeartbeats, 0, size, func(buf []byte) []byte {
		buf = binary.AppendUvarint(buf, uint64(len(calls)))
		for _, c := range calls {
			buf = binary.AppendUvarint(buf, c.g.gid)
			buf = appendBytes(buf, c.req)
		}
		return buf
	}, &epoch)
	var answers [][]byte
	var failed []error
	if err == nil {
		answers, failed, err = decodeHeartbeatsResponse(body, len(calls))
	}
	for i, c := range calls {
		switch {
		case err != nil:
			c.done <- hbResult{err: err}
		case failed[i] != nil:
			c.done <- hbResult{err: failed[i]}
		default:
			c.done <- hbResult{body: answers[i], sent: sent, epoch: epoch}
		}
	}
}

// heartbeatsRequest is a decoded typeHeartbeats frame.
type heartbeatsRequest struct {
	gids []uint64
	reqs []*raft.AppendEntriesRequest
}

// heartbeatsResponse is the encoded answer to one (appendResponse copies it).
type heartbeatsResponse []byte

func decodeHeartbeatsRequest(body []byte) (*heartbeatsRequest, error) {
	d := decoder{b: body}
	count := d.uvarint("heartbeat count")
	if d.err == nil && count > uint64(len(body)) {
		d.fail("heartbeat count")
	}
	r := &heartbeatsRequest{}
	for i := uint64(0); i < count && d.err == nil; i++ {
		gid := d.uvarint("heartbeat group")
		raw := d.bytes("heartbeat")
		if d.err != nil {
			break
		}
		ae, err := decodeAppendEntriesRequest(raw)
		if err != nil {
			return nil, err
		}
		if !isHeartbeat(ae) {
			return nil, fmt.Errorf("%w: a batched heartbeat carries entries", ErrMalformed)
		}
		r.gids = append(r.gids, gid)
		r.reqs = append(r.reqs, ae)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return r, nil
}

// handleHeartbeats runs each heartbeat of a batch through its group's
// heartbeat handler and encodes the answers: per heartbeat a status byte
// (statusOK + AppendEntriesResponse, or statusErr + error text).
func (n *Node) handleHeartbeats(r *heartbeatsRequest, from string) heartbeatsResponse {
	b := binary.AppendUvarint(make([]byte, 0, 16+len(r.gids)*40), uint64(len(r.gids)))
	for i, gid := range r.gids {
		var resp any
		var err error
		g := n.lookup(gid)
		if g == nil {
			err = fmt.Errorf("%w %d", ErrUnknownGroup, gid)
		} else {
			err = n.authorize(g, from, &r.reqs[i].RPCHeader, labelHeartbeat)
		}
		switch {
		case err != nil: // an unknown group, or a refused sender: err is the answer
		case g.heartbeat.Load() == nil:
			// Never queue a batch behind one group's busy main loop.
			err = fmt.Errorf("transport: group %d takes no heartbeats yet", gid)
		default:
			resp, err = g.dispatch(r.reqs[i], nil, true, n.cfg.RPCTimeout)
		}
		if err == nil {
			if ae, ok := resp.(*raft.AppendEntriesResponse); ok {
				b = append(b, statusOK)
				b = appendBytes(b, appendAppendEntriesResponse(nil, ae))
				continue
			}
			err = fmt.Errorf("transport: group %d answered a heartbeat with %T", gid, resp)
		}
		b = append(b, statusErr)
		b = appendBytes(b, []byte(errorString(err)))
	}
	return b
}

func decodeHeartbeatsResponse(body []byte, want int) ([][]byte, []error, error) {
	d := decoder{b: body}
	if count := d.uvarint("heartbeat count"); d.err == nil && count != uint64(want) {
		return nil, nil, fmt.Errorf("%w: %d heartbeat answers for %d heartbeats", ErrMalformed, count, want)
	}
	answers := make([][]byte, want)
	failed := make([]error, want)
	for i := 0; i < want && d.err == nil; i++ {
		status := d.byte("heartbeat status")
		v := d.bytes("heartbeat answer")
		if status == statusOK {
			answers[i] = v
		} else {
			failed[i] = &RemoteError{Msg: string(v)}
		}
	}
	if err := d.finish(); err != nil {
		return nil, nil, err
	}
	return answers, failed, nil
}
