package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Node-to-node calls on the hot path. A follower that receives a write
// proposes it on the channel leader with one small call instead of proxying
// the whole HTTP request (which the leader would parse, authenticate and
// route again: measured as the larger share of a forwarded write's CPU), and
// a follower serving a linearizable read asks the leader for a read index the
// same way. Calls travel on call streams of the cluster port
// (transport.DialCall): authenticated by the cluster key like Raft itself.
//
// Each stream carries one call at a time; idle streams are pooled per peer.
// Frames, both directions:
//
//	op (request) or status (answer) u8 | body length u32 BE | body
//
// Requests:
//
//	opPropose:       gid u64 | timeout ms u32 | fsm.Encode'd command
//	opReadIndex:     gid u64 | timeout ms u32
//	opMetaReadIndex: gid u64 (0, the meta group) | timeout ms u32
//	opHashAt:        gid u64 | timeout ms u32 | index u64 (hashcheck.go)
//
// Answers: statusOK with the op's result (fsm.EncodeResult, the read index
// u64 for both read-index ops, the state hash u64 for opHashAt), or statusErr with an error code u8, and for codeRedirect the leader's
// node id and cluster address, then the error text.
const (
	opPropose       byte = 1
	opReadIndex     byte = 2
	opMetaReadIndex byte = 3
	opHashAt        byte = 4

	statusOK  byte = 0
	statusErr byte = 1

	callHeader = 5
	// maxCallBody bounds a frame: the largest command (a transaction of
	// fsm.MaxTxnBytes) or result (its gets) with room to spare.
	maxCallBody = 2*fsm.MaxTxnBytes + 1<<20
	// maxIdleCalls is how many idle call streams are kept per peer.
	maxIdleCalls = 64
)

// Error codes of a failed call. The caller rebuilds an error that matches
// the same sentinel, so the server's error table answers as if the leader
// had answered itself.
const (
	codeUnknown byte = iota
	codeRedirect
	codeNoLeader
	codeNotHosted
	codeOverloaded
	codeDiskFull
	codeQuota
	codeOutcomeUnknown
	codeStopped
	codeTimeout
	codeBadRequest
	codeCorrupt
	codeHashUnknown
	codeUpgradePending
)

// final marks the answers a proposal's caller may pass on as they are:
// either nothing was proposed, or the leader already says the outcome is
// unknown. Any other error may have come after the entry was appended.
var callErrors = []struct {
	code  byte
	err   error
	final bool
}{
	{codeRedirect, shard.ErrNotLeader, true},
	{codeNoLeader, shard.ErrNoLeader, true},
	{codeNotHosted, shard.ErrNotHosted, true},
	{codeOverloaded, shard.ErrOverloaded, true},
	{codeDiskFull, shard.ErrDiskFull, true},
	{codeQuota, ErrQuotaExceeded, true},
	{codeOutcomeUnknown, shard.ErrOutcomeUnknown, true},
	{codeStopped, shard.ErrStopped, true},
	{codeCorrupt, shard.ErrReplicaCorrupt, true},
	{codeUpgradePending, fsm.ErrUpgradePending, true},
	{codeHashUnknown, fsm.ErrHashUnknown, false},
	{codeTimeout, context.DeadlineExceeded, false},
}

// isFinal reports whether err, decoded from a call's answer, matches a
// final entry of callErrors.
func isFinal(err error) bool {
	for _, ce := range callErrors {
		if ce.final && errors.Is(err, ce.err) {
			return true
		}
	}
	return false
}

// remoteError is an error answered by another node: its text, and the
// sentinel it matched there.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// errCallFailed marks a call that got no answer; sent says whether the
// request may have reached the peer.
type callFailedError struct {
	sent bool
	err  error
}

func (e *callFailedError) Error() string { return e.err.Error() }
func (e *callFailedError) Unwrap() error { return e.err }

// unsentError says a proposal never left this node (its leader's node could
// not be reached); it unwraps to the redirect, so the server can still
// forward the request there.
type unsentError struct {
	re  *shard.RedirectError
	err error
}

func (e *unsentError) Error() string { return fmt.Sprintf("%v: %v", e.re, e.err) }
func (e *unsentError) Unwrap() error { return e.re }

// calls is the client side: pooled call streams per peer address.
type calls struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	mu   sync.Mutex
	idle map[string][]*callConn
}

type callConn struct {
	c  net.Conn
	br *bufio.Reader
}

func newCalls(dial func(ctx context.Context, addr string) (net.Conn, error)) *calls {
	return &calls{dial: dial, idle: map[string][]*callConn{}}
}

func (cs *calls) get(ctx context.Context, addr string) (*callConn, error) {
	cs.mu.Lock()
	if l := cs.idle[addr]; len(l) > 0 {
		cc := l[len(l)-1]
		cs.idle[addr] = l[:len(l)-1]
		cs.mu.Unlock()
		return cc, nil
	}
	cs.mu.Unlock()
	c, err := cs.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &callConn{c: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

func (cs *calls) put(addr string, cc *callConn) {
	cs.mu.Lock()
	if len(cs.idle[addr]) < maxIdleCalls {
		cs.idle[addr] = append(cs.idle[addr], cc)
		cc = nil
	}
	cs.mu.Unlock()
	if cc != nil {
		_ = cc.c.Close()
	}
}

// closeAll drops every idle stream (the node is stopping).
func (cs *calls) closeAll() {
	cs.mu.Lock()
	idle := cs.idle
	cs.idle = map[string][]*callConn{}
	cs.mu.Unlock()
	for _, l := range idle {
		for _, cc := range l {
			_ = cc.c.Close()
		}
	}
}

// call sends one request and returns the answer's status and body. An error
// is a *callFailedError: the call got no answer.
func (cs *calls) call(ctx context.Context, addr string, op byte, body []byte) (byte, []byte, error) {
	cc, err := cs.get(ctx, addr)
	if err != nil {
		return 0, nil, &callFailedError{err: fmt.Errorf("cluster: call %s: %w", addr, err)}
	}
	deadline := time.Now().Add(internalCallLimit)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = cc.c.SetDeadline(deadline)
	// A client that leaves aborts the call at once, not at the deadline.
	stop := context.AfterFunc(ctx, func() { _ = cc.c.SetDeadline(time.Unix(1, 0)) })
	status, resp, sent, err := roundTrip(cc, op, body)
	if !stop() || err != nil {
		_ = cc.c.Close()
		if err == nil {
			err = ctx.Err()
		}
		return 0, nil, &callFailedError{sent: sent, err: fmt.Errorf("cluster: call %s: %w", addr, err)}
	}
	_ = cc.c.SetDeadline(time.Time{})
	cs.put(addr, cc)
	return status, resp, nil
}

func roundTrip(cc *callConn, op byte, body []byte) (status byte, resp []byte, sent bool, err error) {
	frame := make([]byte, callHeader+len(body))
	frame[0] = op
	binary.BigEndian.PutUint32(frame[1:], uint32(len(body)))
	copy(frame[callHeader:], body)
	if n, err := cc.c.Write(frame); err != nil {
		return 0, nil, n > 0, err
	}
	status, resp, err = readFrame(cc.br)
	return status, resp, true, err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var h [callHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxCallBody {
		return 0, nil, fmt.Errorf("cluster: call frame of %d bytes is over the limit", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h[0], body, nil
}

// serveCalls answers call streams until l closes.
func (n *Node) serveCalls(l net.Listener) {
	defer n.callWG.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if !n.trackCallConn(c) {
			_ = c.Close()
			return
		}
		n.callWG.Add(1)
		go n.serveCallConn(c)
	}
}

// trackCallConn registers a served call stream, or reports false once the
// node is stopping. A pooled stream waits for its next request without a
// deadline, so stopping the node aborts the ones still open
// (closeCallConns) rather than trusting the transport to end every session
// under them.
func (n *Node) trackCallConn(c net.Conn) bool {
	n.callMu.Lock()
	defer n.callMu.Unlock()
	if n.callsClosed {
		return false
	}
	n.callConns[c] = struct{}{}
	return true
}

func (n *Node) untrackCallConn(c net.Conn) {
	n.callMu.Lock()
	delete(n.callConns, c)
	n.callMu.Unlock()
}

// closeCallConns closes every served call stream and refuses new ones.
func (n *Node) closeCallConns() {
	n.callMu.Lock()
	n.callsClosed = true
	conns := n.callConns
	n.callConns = map[net.Conn]struct{}{}
	n.callMu.Unlock()
	for c := range conns {
		// A deadline in the past first: closing a yamux stream is only a
		// half-close, which leaves a blocked reader waiting for the peer.
		_ = c.SetDeadline(time.Unix(1, 0))
		_ = c.Close()
	}
}

func (n *Node) serveCallConn(c net.Conn) {
	defer n.callWG.Done()
	defer c.Close()
	defer n.untrackCallConn(c)
	br := bufio.NewReaderSize(c, 4096)
	for {
		op, body, err := readFrame(br)
		if err != nil {
			return
		}
		status, resp := n.handleCall(op, body)
		frame := make([]byte, callHeader, callHeader+len(resp))
		frame[0] = status
		binary.BigEndian.PutUint32(frame[1:], uint32(len(resp)))
		if _, err := c.Write(append(frame, resp...)); err != nil {
			return
		}
	}
}

func (n *Node) handleCall(op byte, body []byte) (byte, []byte) {
	if len(body) < 12 {
		return statusErr, encodeCallError(fmt.Errorf("%w: short call", ErrInvalidRequest))
	}
	gid := binary.BigEndian.Uint64(body)
	timeout := time.Duration(binary.BigEndian.Uint32(body[8:])) * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), min(timeout, internalCallLimit))
	defer cancel()
	if op == opMetaReadIndex {
		return n.serveMetaReadIndex(ctx)
	}
	if op == opHashAt && gid == 0 { // group 0 is the meta group
		n.metrics.callsServed.WithLabelValues("meta_hash").Inc()
		return serveHash(ctx, n.meta.fsm.HashAt, body[12:])
	}
	rep, ok := n.shards.Replica(gid)
	if !ok {
		return statusErr, encodeCallError(fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid))
	}
	switch op {
	case opPropose:
		n.metrics.callsServed.WithLabelValues("propose").Inc()
		res, err := n.proposeLocal(ctx, rep, body[12:])
		if err != nil {
			return statusErr, encodeCallError(err)
		}
		return statusOK, fsm.EncodeResult(nil, res)
	case opReadIndex:
		n.metrics.callsServed.WithLabelValues("readindex").Inc()
		// The commit index, confirmed: the follower waits for its own
		// state machine, not for this one's (shard.Replica.ReadIndex).
		idx, err := rep.ReadIndex(ctx)
		if err != nil {
			return statusErr, encodeCallError(err)
		}
		return statusOK, binary.BigEndian.AppendUint64(nil, idx)
	case opHashAt:
		n.metrics.callsServed.WithLabelValues("hash").Inc()
		return serveHash(ctx, rep.FSM().HashAt, body[12:])
	}
	return statusErr, encodeCallError(fmt.Errorf("%w: unknown call %d", ErrInvalidRequest, op))
}

// callRequest is the common head of every request.
func callRequest(ctx context.Context, gid uint64, extra int) []byte {
	timeout := internalCallLimit
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	b := make([]byte, 12, 12+extra)
	binary.BigEndian.PutUint64(b, gid)
	binary.BigEndian.PutUint32(b[8:], uint32(max(timeout, time.Millisecond)/time.Millisecond))
	return b
}

// remotePropose proposes cmd on the leader re names. A refusal that proves
// nothing was proposed there comes back as a *shard.RedirectError (the server
// then forwards the HTTP request as before); a call that may have reached
// the leader but got no answer is shard.ErrOutcomeUnknown.
func (n *Node) remotePropose(ctx context.Context, re *shard.RedirectError, gid uint64, cmd []byte) (*fsm.Result, error) {
	body := append(callRequest(ctx, gid, len(cmd)), cmd...)
	status, resp, err := n.calls.call(ctx, re.Addr, opPropose, body)
	if err != nil {
		var cf *callFailedError
		if errors.As(err, &cf) && !cf.sent {
			n.metrics.calls.WithLabelValues("propose", "unreachable").Inc()
			n.leaderUnreachable(re.Addr)
			// Nothing sent: the caller may wait for another leader, or
			// the server forwards (and reports the node unreachable).
			return nil, &unsentError{re: re, err: err}
		}
		n.metrics.calls.WithLabelValues("propose", "no_answer").Inc()
		return nil, fmt.Errorf("%w: proposed to node %s, which did not answer: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	if status != statusOK {
		n.metrics.calls.WithLabelValues("propose", "refused").Inc()
		err := decodeCallError(resp)
		if isFinal(err) {
			return nil, err // a moved leader comes back as a *shard.RedirectError
		}
		return nil, fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	res, err := fsm.DecodeResult(resp)
	if err != nil {
		n.metrics.calls.WithLabelValues("propose", "bad_answer").Inc()
		return nil, fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	n.metrics.calls.WithLabelValues("propose", "ok").Inc()
	return res, nil
}

// remoteReadIndex asks the leader at addr for a read index of group gid.
func (n *Node) remoteReadIndex(ctx context.Context, addr string, gid uint64) (uint64, error) {
	status, resp, err := n.calls.call(ctx, addr, opReadIndex, callRequest(ctx, gid, 0))
	if err != nil {
		return 0, err
	}
	if status != statusOK {
		return 0, fmt.Errorf("cluster: read index from %s: %w", addr, decodeCallError(resp))
	}
	if len(resp) != 8 {
		return 0, fmt.Errorf("cluster: read index from %s: answer of %d bytes", addr, len(resp))
	}
	return binary.BigEndian.Uint64(resp), nil
}

func encodeCallError(err error) []byte {
	code := codeUnknown
	for _, ce := range callErrors {
		if errors.Is(err, ce.err) {
			code = ce.code
			break
		}
	}
	b := []byte{code}
	if code == codeRedirect {
		var re shard.RedirectError // the leader, when known
		if p := (*shard.RedirectError)(nil); errors.As(err, &p) {
			re = *p
		}
		b = appendBytes(b, []byte(re.NodeID))
		b = appendBytes(b, []byte(re.Addr))
	}
	return appendBytes(b, []byte(err.Error()))
}

func decodeCallError(b []byte) error {
	d := decoder{b: b}
	code := d.byte()
	var nodeID, addr []byte
	if code == codeRedirect {
		nodeID, addr = d.bytes(), d.bytes()
	}
	msg := string(d.bytes())
	if d.err != nil {
		return fmt.Errorf("%w: undecodable error answer", shard.ErrOutcomeUnknown)
	}
	var sentinel error = errors.New("cluster: remote error")
	for _, ce := range callErrors {
		if ce.code == code {
			sentinel = ce.err
		}
	}
	err := &remoteError{sentinel: sentinel, msg: msg}
	if code == codeRedirect && len(addr) > 0 {
		return &shard.RedirectError{Err: err, NodeID: string(nodeID), Addr: string(addr)}
	}
	return err
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// decoder reads what encodeCallError wrote; the first
// error sticks.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("cluster: truncated call answer")

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.err = errShort
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	if n == 0 {
		return nil
	}
	return v
}
