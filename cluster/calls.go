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

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// The older framing of node-to-node calls, which nodes of the previous
// version send and serve (route.go's compatibility note: remove with it),
// and the error codes every call answers with. Each stream carries one call
// at a time; idle streams are pooled per peer. Frames, both directions:
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
// u64 for both read-index ops, the state hash u64 for opHashAt), or
// statusErr with an error (encodeCallError).
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
// the same sentinel, so the server's error table answers as if the node
// that served the call had answered itself. Codes are never reused; a code
// with codeRedirectBit set (and codeRedirect) carries the node a
// *shard.RedirectError names.
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
	codeNotMetaLeader
	codeNoMetaLeader
	codeChannelExists
	codeChannelNotFound
	codeNotEnoughNodes
	codeNodeNotFound
	codeRepairSource
	codeNotReady
	codeNotCorrupt
	codeSnapshotBehind
	codeClosed
	codeInvalidKey
	codeKeyTooLarge
	codeInvalidCommand
	codeValueLarge
	codeTxnTooLarge
	codeCanceled
	codeUnreachable
	codeTokenNotFound
	codeTooManyTokens
	codeUploadGone
	codeUnauthorized
	codeForbidden
	codePlacementChanged
	codeNodeState
	codeFileNotFound
	codePrecondition
	codeHoldersMinority
	codeInvalidPath
	codeNotEnoughHolders
	codeUploadMismatch
	codeChunkUnavailable
	codeUploadNotFound
	codeUploadOffset
	codeTooManyUploads

	codeRedirectBit byte = 0x80
)

// callErrors maps sentinels to codes, first match wins: outcome_unknown
// first, as in the server's table (docs/design.md "D3"). final marks the
// answers a proposal's caller may pass on as they are: either nothing was
// proposed, or the serving node already says the outcome is unknown. Any
// other error may have come after the entry was appended.
var callErrors = []struct {
	code  byte
	err   error
	final bool
}{
	{codeOutcomeUnknown, shard.ErrOutcomeUnknown, true},
	{codeRedirect, shard.ErrNotLeader, true},
	{codeNoLeader, shard.ErrNoLeader, true},
	{codeNotHosted, shard.ErrNotHosted, true},
	{codeOverloaded, shard.ErrOverloaded, true},
	{codeDiskFull, shard.ErrDiskFull, true},
	{codeQuota, ErrQuotaExceeded, true},
	{codeStopped, shard.ErrStopped, true},
	{codeCorrupt, shard.ErrReplicaCorrupt, true},
	{codeUpgradePending, fsm.ErrUpgradePending, true},
	{codeHashUnknown, fsm.ErrHashUnknown, false},
	{codeTimeout, context.DeadlineExceeded, false},
	{codeBadRequest, ErrInvalidRequest, true},
	{codeNotMetaLeader, ErrNotMetaLeader, true},
	{codeNoMetaLeader, ErrNoMetaLeader, true},
	{codeChannelExists, ErrChannelExists, true},
	{codeChannelNotFound, ErrChannelNotFound, true},
	{codeNotEnoughNodes, ErrNotEnoughNodes, true},
	{codeNodeNotFound, ErrNodeNotFound, true},
	{codeRepairSource, ErrRepairSource, true},
	{codeNotReady, ErrNotReady, true},
	{codeNotCorrupt, shard.ErrNotCorrupt, true},
	{codeSnapshotBehind, fsm.ErrSnapshotBehind, true},
	{codeClosed, fsm.ErrClosed, false},
	{codeInvalidKey, fsm.ErrInvalidKey, true},
	{codeKeyTooLarge, fsm.ErrKeyTooLarge, true},
	{codeInvalidCommand, fsm.ErrInvalidCommand, true},
	{codeValueLarge, fsm.ErrValueLarge, true},
	{codeTxnTooLarge, fsm.ErrTxnTooLarge, true},
	{codeCanceled, context.Canceled, false},
	{codeUnreachable, ErrUnreachable, true},
	{codeTokenNotFound, ErrTokenNotFound, true},
	{codeTooManyTokens, ErrTooManyTokens, true},
	{codeUploadGone, ErrUploadGone, true},
	{codeUnauthorized, access.ErrUnauthorized, true},
	{codeForbidden, access.ErrForbidden, true},
	{codePlacementChanged, ErrPlacementChanged, true},
	{codeNodeState, ErrNodeState, true},
	{codeFileNotFound, fsm.ErrFileNotFound, true},
	{codePrecondition, fsm.ErrPrecondition, true},
	{codeHoldersMinority, fsm.ErrHoldersMinority, true},
	{codeInvalidPath, fsm.ErrInvalidPath, true},
	{codeNotEnoughHolders, ErrNotEnoughHolders, true},
	{codeUploadMismatch, ErrUploadMismatch, true},
	{codeChunkUnavailable, ErrChunkUnavailable, true},
	{codeUploadNotFound, ErrUploadNotFound, true},
	{codeUploadOffset, ErrUploadOffset, true},
	{codeTooManyUploads, ErrTooManyUploads, true},
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

// serveLegacy serves a stream of calls of the older framing whose first
// request was read.
func (r *router) serveLegacy(c net.Conn, br *bufio.Reader, op byte, body []byte) {
	for {
		status, resp := r.handleLegacy(op, body)
		frame := make([]byte, callHeader, callHeader+len(resp))
		frame[0] = status
		binary.BigEndian.PutUint32(frame[1:], uint32(len(resp)))
		if _, err := c.Write(append(frame, resp...)); err != nil {
			return
		}
		var err error
		if op, body, err = readFrame(br); err != nil {
			return
		}
	}
}

// legacyOps are the route calls that serve the older framing's ops, whose
// bodies are a route call's head after the group id and timeout.
var legacyOps = map[byte]byte{opPropose: rcPropose, opReadIndex: rcReadIndex, opMetaReadIndex: rcMetaReadIndex, opHashAt: rcHash}

func (r *router) handleLegacy(op byte, body []byte) (byte, []byte) {
	rc, ok := legacyOps[op]
	if !ok || len(body) < 12 {
		return statusErr, encodeCallError(fmt.Errorf("%w: unknown or short call %d", ErrInvalidRequest, op))
	}
	gid := binary.BigEndian.Uint64(body)
	timeout := time.Duration(binary.BigEndian.Uint32(body[8:])) * time.Millisecond
	ctx, cancel := context.WithTimeout(ServeLocally(context.Background()), min(timeout, internalCallLimit))
	defer cancel()
	head := body[12:]
	switch rc {
	case rcPropose, rcHash:
		head = append(binary.BigEndian.AppendUint64(nil, gid), head...)
	case rcReadIndex:
		head = binary.BigEndian.AppendUint64(nil, gid)
	case rcMetaReadIndex:
		head = nil
	}
	h, name := r.handler(rc)
	r.n.metrics.callsServed.WithLabelValues(name).Inc()
	res, _, err := h(ctx, head, nil)
	if err != nil {
		return statusErr, encodeCallError(err)
	}
	return statusOK, res
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

func encodeCallError(err error) []byte {
	code := codeUnknown
	for _, ce := range callErrors {
		if errors.Is(err, ce.err) {
			code = ce.code
			break
		}
	}
	var re *shard.RedirectError // the node that can answer, when known
	if errors.As(err, &re) && code != codeRedirect {
		code |= codeRedirectBit
	}
	b := []byte{code}
	if code == codeRedirect || code&codeRedirectBit != 0 {
		if re == nil {
			re = &shard.RedirectError{}
		}
		b = appendBytes(b, []byte(re.NodeID))
		b = appendBytes(b, []byte(re.Addr))
	}
	return appendBytes(b, []byte(err.Error()))
}

func decodeCallError(b []byte) error {
	d := decoder{b: b}
	code := d.byte()
	redirect := code == codeRedirect || code&codeRedirectBit != 0
	code &^= codeRedirectBit
	var nodeID, addr []byte
	if redirect {
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
	if redirect && len(addr) > 0 {
		return &shard.RedirectError{Err: err, NodeID: string(nodeID), Addr: string(addr)}
	}
	return err
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
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
