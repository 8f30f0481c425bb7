package transport

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/yamux"
)

// pipeline is one group's AppendEntries pipeline to one follower: a
// dedicated RPC stream on which requests are written in order while one
// goroutine reads the responses in the same order. The receiving side needs
// nothing special: it serves the stream like any RPC stream, one frame after
// the other, and the requests that arrive meanwhile wait in the stream's
// receive window.
type pipeline struct {
	g      *GroupTransport
	target raft.ServerAddress
	st     *yamux.Stream
	epoch  uint64 // st's session (peer.epoch), 0 if it was no longer live

	// inflight holds the futures whose responses are still to be read; its
	// capacity bounds the requests in flight (back-pressure on Raft).
	inflight chan *appendFuture
	done     chan raft.AppendFuture

	writeMu sync.Mutex
	fresh   bool // kind byte not yet written

	// entriesAt is when the last append with entries was sent (or the
	// pipeline opened); only AppendEntries' single caller touches it.
	entriesAt time.Time

	closeOnce sync.Once
	closed    chan struct{}
}

func newPipeline(g *GroupTransport, target raft.ServerAddress, st *yamux.Stream, epoch uint64) *pipeline {
	return &pipeline{
		g:         g,
		target:    target,
		st:        st,
		epoch:     epoch,
		inflight:  make(chan *appendFuture, pipelineDepth),
		done:      make(chan raft.AppendFuture, pipelineDepth),
		fresh:     true,
		closed:    make(chan struct{}),
		entriesAt: time.Now(),
	}
}

// AppendEntries implements raft.AppendPipeline. It blocks while
// pipelineDepth requests await their responses.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	n := p.g.node
	f := &appendFuture{start: time.Now(), req: args, resp: resp, ready: make(chan struct{})}
	select {
	case <-p.closed:
		n.metrics.errors[labelAppendEntries].Inc()
		return nil, raft.ErrPipelineShutdown
	default:
	}
	if len(args.Entries) > 0 {
		p.entriesAt = f.start
	}
	if quiet, ok := p.g.quietAnswer(p.target, args); ok && p.epoch != 0 && !p.st.Session().IsClosed() {
		// Nothing the follower does not know (quiet.go): answered in
		// order by decodeLoop, without a frame.
		if f.start.Sub(p.entriesAt) >= pipelineIdle {
			// Idle long enough to park (quiet.go): raft closes the
			// pipeline on this "no" and goes on with plain appends.
			quiet.Success = false
			p.g.park(p.target)
		} else {
			n.countQuiet()
		}
		*resp, f.local = quiet, true
	} else {
		n.metrics.sent[labelAppendEntries].Inc()
	}
	// Queue before writing, so the decoder knows the future before its
	// response can arrive; AppendEntries has a single caller (Raft's
	// replication goroutine), so queue order is write order.
	select {
	case p.inflight <- f:
	case <-p.closed:
		n.metrics.errors[labelAppendEntries].Inc()
		return nil, raft.ErrPipelineShutdown
	case <-p.g.closed:
		n.metrics.errors[labelAppendEntries].Inc()
		return nil, p.g.errClosed()
	}
	if f.local {
		return f, nil
	}

	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	buf := getBuf()
	b := (*buf)[:0]
	if need := 1 + reqHeaderSize + appendEntriesSizeHint(args); cap(b) < need {
		b = make([]byte, 0, need)
	}
	if p.fresh {
		b = append(b, kindRPC)
	}
	off := len(b)
	b = appendRequestHeader(b, p.g.gid, typeAppendEntries)
	b = appendAppendEntriesRequest(b, args)
	err := finishRequest(b, off)
	if err == nil {
		_ = p.st.SetWriteDeadline(time.Now().Add(n.cfg.RPCTimeout))
		err = writeChunked(p.st, b)
	}
	putBuf(buf, b)
	if err != nil {
		// The stream may hold half a frame: nothing more can be sent on it.
		// Aborting it also fails the queued future in the decoder.
		n.metrics.errors[labelAppendEntries].Inc()
		abortStream(p.st)
		return nil, fmt.Errorf("transport: pipeline to %s (group %d): send: %w", p.target, p.g.gid, err)
	}
	p.fresh = false
	return f, nil
}

// decodeLoop reads the responses in order and hands each future to Raft.
// After a stream failure every queued future fails too (Raft then closes the
// pipeline and falls back to plain AppendEntries).
func (p *pipeline) decodeLoop() {
	n := p.g.node
	var scratch [respHeaderSize]byte
	for {
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-p.closed:
			return
		case <-p.g.closed:
			return
		case <-n.done:
			return
		}
		if f.local {
			close(f.ready)
			if !p.deliver(f) {
				return
			}
			continue
		}
		_ = p.st.SetReadDeadline(time.Now().Add(n.cfg.RPCTimeout))
		body, err := readResponse(p.st, scratch[:])
		if len(body) > shrinkAfter {
			p.st.Shrink()
		}
		if err == nil {
			err = decodeAppendEntriesResponse(body, f.resp)
		}
		if err == nil {
			p.g.noteFollower(p.target, f.req, f.start, p.epoch, f.resp)
		}
		if err != nil {
			p.g.forgetFollower(p.target)
			n.metrics.errors[labelAppendEntries].Inc()
			var remote *RemoteError
			if !errors.As(err, &remote) {
				abortStream(p.st)
			}
			f.err = fmt.Errorf("transport: pipeline to %s (group %d): %w", p.target, p.g.gid, err)
		}
		close(f.ready)
		if !p.deliver(f) {
			return
		}
	}
}

// deliver hands f to Raft; false once the pipeline, group or node closed:
// their closing must not leave decodeLoop waiting for a Raft that no
// longer consumes.
func (p *pipeline) deliver(f *appendFuture) bool {
	select {
	case p.done <- f:
		return true
	case <-p.closed:
	case <-p.g.closed:
	case <-p.g.node.done:
	}
	return false
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close implements raft.AppendPipeline: it aborts the stream (in-flight
// requests get no answer) and stops the decoder.
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		p.g.node.metrics.pipelines.Dec()
		close(p.closed)
		p.g.node.untrackStream(p.st)
		abortStream(p.st)
	})
	return nil
}

// appendFuture implements raft.AppendFuture.
type appendFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	ready chan struct{}
	local bool // answered by quietAnswer, never sent
}

func (f *appendFuture) Error() error {
	<-f.ready
	return f.err
}

func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }
