package transport

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// GroupTransport is one Raft group's view of the node transport. It
// implements raft.Transport, raft.WithPreVote and raft.WithClose. An idle
// group costs its consumer channel and one entry in the node's group map:
// no goroutine and no buffer of its own.
type GroupTransport struct {
	node      *Node
	gid       uint64
	consumeCh chan raft.RPC
	closed    chan struct{}
	closeOnce sync.Once
	heartbeat atomic.Pointer[func(raft.RPC)]
	urgent    atomic.Int64                           // unix nanos until which heartbeats skip batching (Urgent)
	quietBeat atomic.Int64                           // SetQuietHeartbeats, nanoseconds; 0: every heartbeat goes out
	voters    atomic.Pointer[func(node string) bool] // SetVoterCheck (auth.go)
	replicas  atomic.Pointer[func(node string) bool] // SetReplicaCheck (auth.go)

	// followers holds, per follower address, the last log index it
	// reported in its latest successful AppendEntries answer to this
	// (leader) replica: a lower bound of its log, for FollowerLastLog; and
	// the send time of the latest AppendEntries it answered as a follower
	// of this replica's term, for AckedSince.
	followersMu sync.Mutex
	followers   map[raft.ServerAddress]followerLog
}

type followerLog struct {
	last uint64
	at   time.Time

	ackTerm uint64
	ackSent time.Time

	// Quiet appends (quiet.go): the follower's log matches this leader's
	// (of matchTerm) through matched, it was told commit index commit, as
	// of its real answer to an append at appendAt.
	matchTerm, matched, commit uint64
	appendAt                   time.Time
	// appendEpoch is the session (peer.epoch) that append went out on, 0
	// after an exchange with the follower failed: a follower restarted
	// behind a new session has lost the commit index it was told
	// (quiet.go).
	appendEpoch uint64
	// parked: replicated by plain appends until one with entries
	// succeeds (quiet.go, "Parked pipelines").
	parked bool

	// Quiet heartbeats (quiet.go): the follower answered "yes" to a
	// heartbeat of beatTerm sent at beatAt, the first of that term at
	// termAt (when this node first heard it follow this term).
	beatTerm       uint64
	beatAt, termAt time.Time
	beatEpoch      uint64 // the session beatAt's heartbeat went out on
}

var (
	_ raft.Transport   = (*GroupTransport)(nil)
	_ raft.WithPreVote = (*GroupTransport)(nil)
	_ raft.WithClose   = (*GroupTransport)(nil)
)

// ID returns the group id the transport routes by.
func (g *GroupTransport) ID() uint64 { return g.gid }

// Consumer implements raft.Transport.
func (g *GroupTransport) Consumer() <-chan raft.RPC { return g.consumeCh }

// LocalAddr implements raft.Transport: the node's advertised address, shared
// by every group on the node (the group id routes, not the address).
func (g *GroupTransport) LocalAddr() raft.ServerAddress { return g.node.addr }

// EncodePeer implements raft.Transport: the address bytes as they are.
func (g *GroupTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer implements raft.Transport.
func (g *GroupTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler implements raft.Transport. Heartbeats for the group are
// handed to cb on the stream's goroutine, never queued behind the consumer.
// cb must respond before it returns, as Raft's does; a heartbeat it returns
// from unanswered fails.
func (g *GroupTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		g.heartbeat.Store(nil)
		return
	}
	g.heartbeat.Store(&cb)
}

// Close implements raft.WithClose: it unregisters the group from the node and
// fails its pending RPCs, inbound and outbound. Sessions and streams other
// groups use stay open. The node accepts a new registration of the same id
// afterwards (a replica restarting).
//
// Call it before raft.Shutdown: Shutdown waits for Raft's replication
// goroutines before it calls Close itself, and one may be waiting for an
// unreachable peer for up to Config.ReplicationWait (doc.go); Close ends
// that wait at once, and Shutdown's Close is then a no-op.
func (g *GroupTransport) Close() error {
	g.closeOnce.Do(func() {
		// Close first so trackStream admits nothing after the sweep.
		g.node.inflightMu.Lock()
		close(g.closed)
		g.node.inflightMu.Unlock()
		g.node.unregister(g)
		g.node.abortGroupStreams(g)
	})
	return nil
}

func (g *GroupTransport) isClosed() bool {
	select {
	case <-g.closed:
		return true
	default:
		return false
	}
}

func (g *GroupTransport) errClosed() error {
	return fmt.Errorf("%w: group %d", ErrClosed, g.gid)
}

// AppendEntries implements raft.Transport.
func (g *GroupTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	// Heartbeats fail fast on an unreachable peer; the AppendEntries that
	// carry entries or the commit index wait for it (doc.go).
	label, wait := labelAppendEntries, g.node.replicationWait()
	sent := time.Now()
	var epoch uint64 // the session the exchange goes on (quiet.go)
	if isHeartbeat(args) {
		label = labelHeartbeat
	}
	if err := g.node.expectPeer(id, target); err != nil {
		return g.result(label, target, err)
	}
	if quiet, ok := g.quietAnswer(target, args); ok {
		// A parked follower's plain appends (quiet.go): as the pipeline's.
		*resp = quiet
		g.node.countQuiet()
		return nil
	}
	if isHeartbeat(args) {
		if quiet, ok := g.quietHeartbeat(target, args); ok {
			*resp = quiet
			g.node.metrics.quietHeartbeats.Inc()
			g.node.quiet.beats.Add(1)
			return nil
		}
		if g.node.cfg.HeartbeatBatch > 0 && !g.isUrgent() {
			return g.result(labelHeartbeat, target, g.node.batcher(target).heartbeat(g, args, resp))
		}
		label, wait = labelHeartbeat, 0
	}
	body, err := g.callOn(target, typeAppendEntries, label, wait, appendEntriesSizeHint(args), func(b []byte) []byte { return appendAppendEntriesRequest(b, args) }, &epoch)
	if err == nil {
		err = decodeAppendEntriesResponse(body, resp)
	}
	if err == nil {
		g.noteFollower(target, args, sent, epoch, resp)
	} else {
		g.forgetFollower(target)
	}
	return g.result(label, target, err)
}

// noteFollower records what a follower's answer to args, sent at sent over
// the session of epoch, says: that it followed args' term then (any answer
// at the same term, a log mismatch included); on success, its log; and,
// for an append that was not a heartbeat, how far its log matches this
// leader's and the commit index it was told (quiet.go).
func (g *GroupTransport) noteFollower(target raft.ServerAddress, args *raft.AppendEntriesRequest, sent time.Time, epoch uint64, resp *raft.AppendEntriesResponse) {
	term := args.Term
	acked := resp.Term == term
	if !resp.Success && !acked {
		return
	}
	now := time.Now()
	g.followersMu.Lock()
	if g.followers == nil {
		g.followers = make(map[raft.ServerAddress]followerLog, 2)
	}
	f := g.followers[target]
	if resp.Success {
		f.last, f.at = resp.LastLog, now
	}
	if acked && (f.ackTerm != term || sent.After(f.ackSent)) {
		f.ackTerm, f.ackSent = term, sent
	}
	if resp.Success && acked && isHeartbeat(args) {
		if f.beatTerm != term {
			f.beatTerm, f.termAt, f.beatAt, f.beatEpoch = term, now, sent, epoch
		} else if sent.After(f.beatAt) {
			f.beatAt, f.beatEpoch = sent, epoch
		}
	}
	if resp.Success && acked && !isHeartbeat(args) {
		f.noteAppended(args, epoch, now)
		if len(args.Entries) > 0 {
			f.parked = false
		}
	}
	g.followers[target] = f
	g.followersMu.Unlock()
}

// forgetFollower makes the quiet answers (quiet.go) wait for the
// follower's next real answer: an exchange with it failed, and its replica
// may have restarted in place (closed and opened again on a node that
// stayed up) and lost the commit index it was told.
func (g *GroupTransport) forgetFollower(target raft.ServerAddress) {
	g.followersMu.Lock()
	if f, ok := g.followers[target]; ok && (f.appendEpoch != 0 || f.beatEpoch != 0) {
		f.appendEpoch, f.beatEpoch = 0, 0
		g.followers[target] = f
	}
	g.followersMu.Unlock()
}

// AckedSince reports whether the follower at addr has answered an
// AppendEntries (a heartbeat or entries) of term that this replica sent at
// or after since, as a follower of that term. A leader confirms a read
// with such answers only: raft's VerifyLeader counts any answer that
// arrives after it asks, including answers to messages sent before, so a
// leader resumed after a pause could count acknowledgements from before a
// new leader was elected (docs/architecture.md "A read").
func (g *GroupTransport) AckedSince(addr raft.ServerAddress, term uint64, since time.Time) bool {
	f, ok := g.follower(addr)
	return ok && f.ackTerm == term && !f.ackSent.Before(since)
}

// FollowerLastLog returns the last log index the follower at addr reported
// in its latest successful AppendEntries answer to this replica (a lower
// bound of its log then: raft fills it in before appending the request's
// entries) and how long ago that answer came; ok is false if none did
// since this replica started.
func (g *GroupTransport) FollowerLastLog(addr raft.ServerAddress) (last uint64, age time.Duration, ok bool) {
	f, ok := g.follower(addr)
	if !ok {
		return 0, 0, false
	}
	return f.last, time.Since(f.at), true
}

// RequestVote implements raft.Transport.
func (g *GroupTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := g.node.expectPeer(id, target); err != nil {
		return g.result(labelRequestVote, target, err)
	}
	body, err := g.voteCall(target, typeRequestVote, labelRequestVote, func(b []byte) []byte { return appendRequestVoteRequest(b, args) })
	if err == nil {
		err = decodeRequestVoteResponse(body, resp)
	}
	return g.result(labelRequestVote, target, err)
}

// RequestPreVote implements raft.WithPreVote.
func (g *GroupTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := g.node.expectPeer(id, target); err != nil {
		return g.result(labelRequestPreVote, target, err)
	}
	body, err := g.voteCall(target, typeRequestPreVote, labelRequestPreVote, func(b []byte) []byte { return appendRequestPreVoteRequest(b, args) })
	if err == nil {
		err = decodeRequestPreVoteResponse(body, resp)
	}
	return g.result(labelRequestPreVote, target, err)
}

// TimeoutNow implements raft.Transport.
func (g *GroupTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if err := g.node.expectPeer(id, target); err != nil {
		return g.result(labelTimeoutNow, target, err)
	}
	body, err := g.call(target, typeTimeoutNow, labelTimeoutNow, 0, 0, func(b []byte) []byte { return appendTimeoutNowRequest(b, args) })
	if err == nil {
		err = decodeTimeoutNowResponse(body, resp)
	}
	return g.result(labelTimeoutNow, target, err)
}

// result counts a failed RPC and gives its error context.
func (g *GroupTransport) result(label int, target raft.ServerAddress, err error) error {
	if err == nil {
		return nil
	}
	g.node.metrics.errors[label].Inc()
	if g.isClosed() && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w (%v)", g.errClosed(), err)
	}
	return fmt.Errorf("transport: %s to %s (group %d): %w", labelNames[label], target, g.gid, err)
}

// call sends one request frame on an RPC stream of its own and returns the
// response body. The stream goes back to the peer's idle pool only after a
// complete exchange; any failure aborts it, since a late response could
// otherwise be read by the next RPC. wait is how long to wait for an
// unreachable peer (zero: fail fast; see peer.open). sizeHint pre-sizes the
// encode buffer.
// voteCall is call for (pre-)vote requests, which a peer that does not run
// the group yet (a new group's replicas start on their nodes a few
// milliseconds apart) is asked again every voteRetryEvery for up to
// voteWaitForGroup instead of failing at once. A candidate whose votes
// failed stays a candidate until its election timer (at least the lease,
// 1 s) runs out, even if its peers are up by then; waiting here lets the
// first election of a new group succeed as soon as a majority runs it.
func (g *GroupTransport) voteCall(target raft.ServerAddress, typ uint8, label int, encode func([]byte) []byte) ([]byte, error) {
	deadline := time.Now().Add(voteWaitForGroup)
	for {
		body, err := g.call(target, typ, label, 0, 0, encode)
		var re *RemoteError
		if err == nil || !errors.As(err, &re) || !strings.HasPrefix(re.Msg, ErrUnknownGroup.Error()) || time.Now().After(deadline) {
			return body, err
		}
		select {
		case <-g.closed:
			return nil, g.errClosed()
		case <-time.After(voteRetryEvery):
		}
	}
}

const (
	voteWaitForGroup = time.Second
	voteRetryEvery   = 20 * time.Millisecond
)

func (g *GroupTransport) call(target raft.ServerAddress, typ uint8, label int, wait time.Duration, sizeHint int, encode func([]byte) []byte) ([]byte, error) {
	return g.callOn(target, typ, label, wait, sizeHint, encode, nil)
}

// callOn is call that also sets *epoch, when epoch is not nil, to the
// epoch of the session the exchange went on (0 if it was no longer live).
func (g *GroupTransport) callOn(target raft.ServerAddress, typ uint8, label int, wait time.Duration, sizeHint int, encode func([]byte) []byte, epoch *uint64) ([]byte, error) {
	g.node.metrics.sent[label].Inc()
	if g.isClosed() {
		return nil, g.errClosed()
	}
	return g.node.roundTrip(target, g, g.gid, typ, wait, sizeHint, encode, epoch)
}

// roundTrip is call's exchange; owner, when set, is the group the stream is
// tracked for (its Close aborts the exchange), else the node's own calls
// (batched heartbeats) stop only when the node closes. A non-nil epoch is
// set as callOn says.
func (n *Node) roundTrip(target raft.ServerAddress, owner *GroupTransport, gid uint64, typ uint8, wait time.Duration, sizeHint int, encode func([]byte) []byte, epoch *uint64) ([]byte, error) {
	stop, errClosed := n.done, func() error { return ErrClosed }
	if owner != nil {
		stop, errClosed = owner.closed, owner.errClosed
	}
	deadline := time.Now().Add(n.cfg.RPCTimeout)
	p, err := n.peer(string(target))
	if err != nil {
		return nil, err
	}
	st, fresh, err := p.stream(deadline, stop, wait)
	if err != nil {
		if owner != nil && owner.isClosed() {
			return nil, errClosed()
		}
		return nil, err
	}
	if fresh && wait > 0 {
		// It may have waited for the peer: the exchange gets its own timeout.
		deadline = time.Now().Add(n.cfg.RPCTimeout)
	}
	if epoch != nil {
		*epoch = p.epochOf(st.Session())
	}
	if owner != nil {
		if !n.trackStream(st, owner) {
			_ = st.Close()
			return nil, errClosed()
		}
		defer n.untrackStream(st)
	}

	buf := getBuf()
	b := (*buf)[:0]
	if need := 1 + reqHeaderSize + sizeHint; cap(b) < need {
		b = make([]byte, 0, need)
	}
	if fresh {
		b = append(b, kindRPC)
	}
	off := len(b)
	b = appendRequestHeader(b, gid, typ)
	b = encode(b)
	defer func() { putBuf(buf, b) }()
	if err := finishRequest(b, off); err != nil {
		_ = st.Close()
		return nil, err
	}
	// No deadline is cleared afterwards: the next user of the stream sets
	// its own, and each set allocates in yamux.
	_ = st.SetDeadline(deadline)
	if err := writeChunked(st, b); err != nil {
		abortStream(st)
		return nil, fmt.Errorf("send: %w", err)
	}
	body, err := readResponse(st, b)
	if err != nil {
		var remote *RemoteError
		if !errors.As(err, &remote) {
			abortStream(st)
			return nil, fmt.Errorf("receive: %w", err)
		}
	}
	p.release(st, len(body))
	return body, err
}

// InstallSnapshot implements raft.Transport. The snapshot goes on a stream of
// its own: the request frame, the peer's go-ahead (so an unknown group is
// refused before any data moves), then exactly args.Size bytes read from data
// in small chunks, then the final response. Nothing is buffered beyond one
// chunk, and no other RPC waits behind it.
func (g *GroupTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	err := g.node.expectPeer(id, target)
	if err == nil {
		err = g.installSnapshot(target, args, resp, data)
	}
	return g.result(labelInstallSnapshot, target, err)
}

func (g *GroupTransport) installSnapshot(target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	n := g.node
	n.metrics.sent[labelInstallSnapshot].Inc()
	if g.isClosed() {
		return g.errClosed()
	}
	if args.Size < 0 {
		return fmt.Errorf("negative snapshot size %d", args.Size)
	}
	timeout := n.cfg.RPCTimeout
	p, err := n.peer(string(target))
	if err != nil {
		return err
	}
	st, err := p.open(time.Now().Add(timeout), g.closed, n.replicationWait())
	if err != nil {
		if g.isClosed() {
			return g.errClosed()
		}
		return err
	}
	if !n.trackStream(st, g) {
		_ = st.Close()
		return g.errClosed()
	}
	defer func() {
		n.untrackStream(st)
		abortStream(st)
	}()

	buf := getBuf()
	defer func() { putBuf(buf, (*buf)[:0]) }()
	b := append((*buf)[:0], kindSnapshot)
	b = appendRequestHeader(b, g.gid, typeInstallSnapshot)
	b = appendInstallSnapshotRequest(b, args)
	if err := finishRequest(b, 1); err != nil {
		return err
	}
	_ = st.SetDeadline(time.Now().Add(timeout))
	if err := writeChunked(st, b); err != nil {
		return fmt.Errorf("send snapshot request: %w", err)
	}
	if _, err := readResponse(st, b); err != nil {
		return fmt.Errorf("snapshot refused: %w", err)
	}

	if cap(b) < writeChunk {
		b = make([]byte, writeChunk)
	}
	chunk := b[:writeChunk]
	*buf = b[:0]
	for left := args.Size; left > 0; {
		m, rerr := io.ReadFull(data, chunk[:min(int64(len(chunk)), left)])
		if m > 0 {
			// An idle deadline: a large snapshot may take long in total,
			// but every chunk must move within the RPC timeout.
			_ = st.SetWriteDeadline(time.Now().Add(timeout))
			if _, err := st.Write(chunk[:m]); err != nil {
				return fmt.Errorf("send snapshot data: %w", err)
			}
			left -= int64(m)
		}
		if rerr != nil && left > 0 {
			return fmt.Errorf("read snapshot at %d of %d bytes: %w", args.Size-left, args.Size, rerr)
		}
	}

	_ = st.SetReadDeadline(time.Now().Add(snapshotTimeout(timeout, args.Size)))
	body, err := readResponse(st, chunk)
	if err != nil {
		return fmt.Errorf("snapshot response: %w", err)
	}
	return decodeInstallSnapshotResponse(body, resp)
}

// snapshotTimeout is how long the receiver may take to spool and restore a
// snapshot of size bytes before answering.
func snapshotTimeout(base time.Duration, size int64) time.Duration {
	return base * time.Duration(max(1, size/snapshotTimeoutScale))
}

// AppendEntriesPipeline implements raft.Transport; see pipeline.go.
func (g *GroupTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	n := g.node
	if g.isClosed() {
		return nil, g.errClosed()
	}
	if g.parked(target) {
		return nil, raft.ErrPipelineReplicationNotSupported
	}
	if err := n.expectPeer(id, target); err != nil {
		return nil, err
	}
	p, err := n.peer(string(target))
	if err != nil {
		return nil, err
	}
	st, err := p.open(time.Now().Add(n.cfg.RPCTimeout), g.closed, n.replicationWait())
	if err != nil {
		if g.isClosed() {
			return nil, g.errClosed()
		}
		return nil, fmt.Errorf("transport: pipeline to %s (group %d): %w", target, g.gid, err)
	}
	if !n.trackStream(st, g) {
		_ = st.Close()
		return nil, g.errClosed()
	}
	pl := newPipeline(g, target, st, p.epochOf(st.Session()))
	n.metrics.pipelines.Inc()
	if !n.goFunc(pl.decodeLoop) {
		pl.Close()
		return nil, ErrClosed
	}
	return pl, nil
}
