package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/shardnet/shardnet/shard"
)

// The one request path between nodes. A request this node cannot answer
// (its channel is hosted elsewhere, its leader is another node, it is a
// meta write and another node leads the meta group) is served by calling
// the node that can, once, with one binary call on a stream of its own
// (transport.DialCall, authenticated by the cluster key like Raft itself).
// The decision lives in router.do and nowhere else: run the local answer;
// when it is a *shard.RedirectError, call the node it names. The node
// serving a call answers from its own state or fails (servedCall): it
// never calls on, so a request crosses at most one hop.
//
// A call has a stream to itself while it runs (idle streams are pooled per
// peer, router.stream; one that carried a body is closed after it). Both
// directions big-endian:
//
//	request head:  op u8 | length u32 | guard u64 (all ones) | timeout ms u32 |
//	               flags u8 (bit 0: a request body follows) | the op's head
//	request body:  chunks (optional)
//	answer head:   status u8 (answerOK, answerErr) | length u32 |
//	               for answerOK: flags u8 (bit 0: an answer body follows) |
//	               the op's answer; for answerErr: an error (encodeCallError)
//	answer body:   chunks (optional)
//	chunks:        length u32 | bytes, repeated; length 0 ends the body,
//	               length chunkAbort ends it failed, followed by length u32 |
//	               an error (encodeCallError)
//
// The timeout is the caller's deadline: the serving node drops the call
// when it passes, and when the caller goes away (it closes the stream:
// watchCaller), so a stalled request holds nothing on the far node. Bodies
// move under the transport's per-stream flow control, so a snapshot (or,
// later, a file) streams without being held in memory at either end.
//
// Compatibility (remove with the version after the one that introduced
// route calls): the op bytes of route calls are above every op of the
// older framing on the same streams (calls.go), and the guard reads as a
// group id no node hosts, so a node of the previous version refuses a
// route call unread, with a status of the old framing (0 or 1); the caller
// then knows nothing was done there (errPreviousVersion) and falls back to
// what that version serves: its calls (propose, read indexes, hashes), its
// /internal/ HTTP endpoints (replica info, snapshots) or, for whole API
// requests, a *PreviousVersionError that the HTTP server forwards as that
// version expects.

// Ops of route calls. Each one's head and answer are described at its
// client half (routeops.go).
const (
	rcPropose       byte = 0x10
	rcReadIndex     byte = 0x11
	rcMetaReadIndex byte = 0x12
	rcHash          byte = 0x13
	rcGet           byte = 0x14
	rcList          byte = 0x15
	rcWatch         byte = 0x16
	rcReplicaInfo   byte = 0x17
	rcCreateChannel byte = 0x18
	rcDeleteChannel byte = 0x19
	rcRepair        byte = 0x1A
	rcSnapshot      byte = 0x1B

	answerOK  byte = 0x10
	answerErr byte = 0x11

	flagBody byte = 1

	routeGuard = ^uint64(0)
	routeHead  = 8 + 4 + 1
	// chunkAbort ends a body that failed midway.
	chunkAbort = ^uint32(0)
	// maxChunk bounds one chunk a writer sends; a reader takes up to
	// maxCallBody, the bound of every frame.
	maxChunk = 256 << 10
	// maxCallTimeout bounds the timeout a caller may ask for (a repair's
	// snapshot, a blocking read's wait); most calls ask far less.
	maxCallTimeout = 15 * time.Minute
)

// callGrace is how much longer than a call's deadline its caller waits for
// the answer that the deadline passed.
const callGrace = time.Second

// shortCall marks the ops that take at most internalCallLimit, whatever
// the caller's deadline: the hot path's small calls.
var shortCall = map[byte]bool{rcPropose: true, rcReadIndex: true, rcMetaReadIndex: true, rcHash: true, rcReplicaInfo: true}

// routeRetryFor bounds how long a request whose call reached nobody is
// routed again (nothing was sent: the backend names the node as it knows
// it then: a leader that was killed is replaced by the one its replicas
// elected); routeRetryPause spaces the attempts: a dead node's dial fails
// at once, and its replicas need a moment to elect and learn the new
// leader.
const (
	routeRetryFor   = 3 * time.Second
	routeRetryPause = 50 * time.Millisecond
)

// ErrUnreachable says the node that can answer a request could not be
// reached, and nothing was sent to it.
var ErrUnreachable = errors.New("cluster: cannot reach the node that can answer")

// errPreviousVersion: the peer runs the previous version, which refused a
// route call unread.
var errPreviousVersion = errors.New("cluster: the peer runs a version without route calls")

// PreviousVersionError says a request must be served by a node of the
// previous version, which takes no route calls: the HTTP server forwards
// the request there as that version expects (server/forward.go). It
// unwraps to the redirect naming the node. Remove with the compatibility
// note above.
type PreviousVersionError struct{ Redirect *shard.RedirectError }

func (e *PreviousVersionError) Error() string {
	return fmt.Sprintf("node %s runs the previous version: %v", e.Redirect.NodeID, e.Redirect)
}
func (e *PreviousVersionError) Unwrap() error { return e.Redirect }

// router is the request-routing half of a node: where a request is
// served, the calls that carry it to another node and the serving of the
// calls other nodes send.
type router struct {
	n    *Node
	dial func(ctx context.Context, addr string) (net.Conn, error)

	// leaders caches, for channels not hosted here, who leads them.
	leaders *leaderCache
	// watches holds a token per watch call served (maxServedWatches).
	watches chan struct{}

	// legacy and legacyHTTP speak to nodes of the previous version (the
	// compatibility note above).
	legacy     *calls
	legacyHTTP *http.Client

	// ctx ends when the node stops serving calls: calls served end with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	idle   map[string][]*callConn // idle call streams by peer address
	served map[net.Conn]struct{}  // call streams being served
	closed bool
}

func newRouter(n *Node, dial, dialApp func(ctx context.Context, addr string) (net.Conn, error)) *router {
	ctx, cancel := context.WithCancel(context.Background())
	return &router{
		n:       n,
		ctx:     ctx,
		cancel:  cancel,
		dial:    dial,
		leaders: newLeaderCache(),
		watches: make(chan struct{}, maxServedWatches),
		legacy:  newCalls(dial),
		legacyHTTP: &http.Client{Transport: &http.Transport{
			DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return dialApp(ctx, addr) },
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     30 * time.Second,
		}},
		idle:   map[string][]*callConn{},
		served: map[net.Conn]struct{}{},
	}
}

type servedKey struct{}

// servedCall reports whether ctx is a call's (or a request forwarded by a
// node of the previous version): it must be answered here or fail.
func servedCall(ctx context.Context) bool { return ctx.Value(servedKey{}) != nil }

// ServedLocally reports whether ctx was marked by ServeLocally.
func ServedLocally(ctx context.Context) bool { return servedCall(ctx) }

// ServeLocally marks ctx as a request another node sent here: nothing done
// under it calls on to a third node (a forwarded request is not forwarded
// again). The HTTP server marks the requests nodes of the previous version
// forward to it.
func ServeLocally(ctx context.Context) context.Context {
	return context.WithValue(ctx, servedKey{}, true)
}

// do is the routing decision, for every request that may be served
// elsewhere: local answers here; when it answers a *shard.RedirectError
// (and ctx is not a served call), remote calls the node it names. A request
// is sent to a node at most once, and sent again elsewhere only when the
// first send proved nothing was done: the call reached nobody (a dial
// failure), or the node refused it before doing anything (it no longer
// leads, does not host the group, is stopping). Then the decision runs
// again, for up to routeRetryFor, once local names another node (or at
// once, on the node the refusal names). Anything else remote answers is
// the answer: a request that may have been served is never sent again.
func (r *router) do(ctx context.Context, call string, local func(context.Context) error, remote func(context.Context, *shard.RedirectError) error) error {
	err := local(ctx)
	if servedCall(ctx) {
		return err
	}
	var retryUntil time.Time
	failed := map[string]bool{} // the nodes that failed or refused
	var next, lastTo *shard.RedirectError
	var last error // what the last of them answered
	for {
		re := next
		next = nil
		if re == nil && (!errors.As(err, &re) || re.Addr == "" || re.NodeID == r.n.cfg.Name) {
			return err
		}
		if !failed[re.Addr] {
			if len(failed) > 0 {
				r.n.metrics.calls.WithLabelValues(call, "rerouted").Inc()
			}
			err = remote(ctx, re)
			if !nothingDone(err) {
				return err
			}
			failed[re.Addr], last, lastTo = true, err, re
			var moved *shard.RedirectError
			if errors.As(err, &moved) && moved.Addr != "" && !failed[moved.Addr] && moved.NodeID != r.n.cfg.Name {
				next = moved // the refusing node names who can answer
			}
		}
		if retryUntil.IsZero() {
			retryUntil = time.Now().Add(routeRetryFor)
		}
		if time.Now().After(retryUntil) {
			return unreachable(last, lastTo)
		}
		if next != nil {
			continue
		}
		select {
		case <-ctx.Done():
			return unreachable(last, lastTo)
		case <-r.n.stop:
			return unreachable(last, lastTo)
		case <-time.After(routeRetryPause):
		}
		if err = local(ctx); err == nil {
			return nil
		}
	}
}

// nothingDone reports whether err, a call's, proves the request was not
// served: the call reached nobody, or the node refused it first.
func nothingDone(err error) bool {
	var cf *callFailedError
	var pv *PreviousVersionError
	switch {
	case err == nil, errors.Is(err, shard.ErrOutcomeUnknown), errors.As(err, &pv):
		return false
	case errors.As(err, &cf):
		return !cf.sent
	}
	for _, refusal := range []error{shard.ErrNotLeader, shard.ErrNotHosted, shard.ErrNoLeader, shard.ErrStopped, ErrNotMetaLeader, ErrNoMetaLeader} {
		if errors.Is(err, refusal) {
			return true
		}
	}
	return false
}

// unreachable is the answer once re-routing gave up: a call that reached
// nobody says so; a refusal is passed on.
func unreachable(err error, re *shard.RedirectError) error {
	var cf *callFailedError
	if errors.As(err, &cf) && !cf.sent {
		return fmt.Errorf("%w: node %s: %v", ErrUnreachable, re.NodeID, err)
	}
	return err
}

// callAnswer is a call's answer: the op's answer head and, when the op
// streams one, its body (the caller must Close it).
type callAnswer struct {
	head []byte
	body io.ReadCloser
}

// call sends one route call to the node at addr and returns its answer.
// Errors: a *callFailedError when no answer came (sent: the request may
// have reached the peer), errPreviousVersion when the peer refused it
// unread, else the peer's error rebuilt with its sentinel
// (decodeCallError).
func (r *router) call(ctx context.Context, addr string, op byte, head []byte, body io.Reader) (*callAnswer, error) {
	cc, err := r.stream(ctx, addr)
	if err != nil {
		r.leaderUnreachable(addr)
		return nil, &callFailedError{err: fmt.Errorf("cluster: call %s: %w", addr, err)}
	}
	c := cc.c
	deadline := time.Now().Add(internalCallLimit)
	if d, ok := ctx.Deadline(); ok && (d.Before(deadline) || !shortCall[op]) {
		deadline = d
	}
	// The peer drops the call at deadline and answers so; the stream
	// waits a little longer for that answer (the caller's context ending
	// aborts it at once anyway), so that a call ending at its deadline, a
	// blocking read's wait, ends with the caller's own timeout.
	_ = c.SetDeadline(deadline.Add(callGrace))
	abort := func() { _ = c.SetDeadline(time.Unix(1, 0)); _ = c.Close() }
	// A caller that leaves aborts the call at once, not at its deadline;
	// the peer sees the stream end and drops the call too.
	stop := context.AfterFunc(ctx, abort)
	fail := func(sent bool, err error) (*callAnswer, error) {
		stop()
		abort()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, &callFailedError{sent: sent, err: fmt.Errorf("cluster: call %s: %w", addr, err)}
	}
	cw := &countingWriter{w: c}
	frame := make([]byte, 5, 5+routeHead+len(head))
	frame[0] = op
	binary.BigEndian.PutUint32(frame[1:], uint32(routeHead+len(head)))
	frame = binary.BigEndian.AppendUint64(frame, routeGuard)
	frame = binary.BigEndian.AppendUint32(frame, uint32(max(time.Until(deadline), time.Millisecond)/time.Millisecond))
	flags := byte(0)
	if body != nil {
		flags = flagBody
	}
	frame = append(append(frame, flags), head...)
	// Any byte that left may have reached the peer: the call is sent.
	if body == nil {
		_, err = cw.Write(frame)
	} else {
		bw := bufio.NewWriterSize(cw, 4096)
		_, err = bw.Write(frame)
		if err == nil {
			err = writeChunks(bw, body)
		}
		if err == nil {
			err = bw.Flush()
		}
	}
	if err != nil {
		return fail(cw.n > 0, err)
	}
	status, resp, err := readFrame(cc.br)
	if err != nil {
		return fail(true, err)
	}
	// done ends a call whose answer is all in: a stream that carried no
	// body, and whose caller did not leave, takes the next call.
	done := func() {
		if stop() && body == nil {
			_ = c.SetDeadline(time.Time{})
			r.putStream(addr, cc)
			return
		}
		abort()
	}
	switch status {
	case statusOK, statusErr:
		stop()
		abort()
		return nil, errPreviousVersion
	case answerErr:
		done()
		return nil, decodeCallError(resp)
	case answerOK:
	default:
		return fail(true, fmt.Errorf("unknown answer status %d", status))
	}
	if len(resp) < 1 {
		return fail(true, errors.New("empty answer"))
	}
	ans := &callAnswer{head: resp[1:]}
	if resp[0]&flagBody == 0 {
		done()
		return ans, nil
	}
	ans.body = &answerBody{r: chunkReader{r: cc.br}, close: func() { stop(); abort() }}
	return ans, nil
}

// stream returns an idle call stream to addr that its peer has not closed,
// or a new one. Streams are pooled (maxIdleCalls per peer) because
// opening one per call cost a small call a fifth of its time (yamux's
// open and close handshakes and timers); a call still has its stream to
// itself for as long as it runs.
func (r *router) stream(ctx context.Context, addr string) (*callConn, error) {
	for {
		r.mu.Lock()
		l := r.idle[addr]
		if len(l) == 0 {
			r.mu.Unlock()
			break
		}
		cc := l[len(l)-1]
		r.idle[addr] = l[:len(l)-1]
		r.mu.Unlock()
		if open(cc) {
			return cc, nil
		}
		_ = cc.c.Close()
	}
	c, err := r.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &callConn{c: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

// open reports whether an idle stream's peer has not closed it (a node
// that stopped closes the streams it served): a call written on such a
// stream would be sent, unanswered, and a write outcome_unknown.
func open(cc *callConn) bool {
	_ = cc.c.SetReadDeadline(time.Unix(1, 0))
	_, err := cc.br.Peek(1)
	_ = cc.c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (r *router) putStream(addr string, cc *callConn) {
	r.mu.Lock()
	if !r.closed && len(r.idle[addr]) < maxIdleCalls {
		r.idle[addr] = append(r.idle[addr], cc)
		cc = nil
	}
	r.mu.Unlock()
	if cc != nil {
		_ = cc.c.Close()
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// answerBody is a streamed answer; Close ends the call.
type answerBody struct {
	r     chunkReader
	close func()
	once  sync.Once
}

func (b *answerBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *answerBody) Close() error               { b.once.Do(b.close); return nil }

// writeChunks copies r to w as chunks, ending with an empty one.
func writeChunks(w io.Writer, r io.Reader) error {
	buf := make([]byte, 4+maxChunk)
	for {
		n, err := r.Read(buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf, uint32(n))
			if _, werr := w.Write(buf[:4+n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			_, werr := w.Write([]byte{0, 0, 0, 0})
			return werr
		}
		if err != nil {
			return err
		}
	}
}

// chunkWriter writes a body as chunks (the serving side of a streamed
// answer); end writes its last chunk.
type chunkWriter struct{ w *bufio.Writer }

func (cw chunkWriter) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		n := min(len(p), maxChunk)
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], uint32(n))
		if _, err := cw.w.Write(h[:]); err != nil {
			return done, err
		}
		if _, err := cw.w.Write(p[:n]); err != nil {
			return done, err
		}
		done += n
		p = p[n:]
	}
	return done, nil
}

// end writes the chunk that ends the body: empty, or the abort marker and
// err.
func (cw chunkWriter) end(err error) error {
	var h [4]byte
	if err == nil {
		_, werr := cw.w.Write(h[:])
		return errors.Join(werr, cw.w.Flush())
	}
	binary.BigEndian.PutUint32(h[:], chunkAbort)
	e := encodeCallError(err)
	b := binary.BigEndian.AppendUint32(h[:], uint32(len(e)))
	_, werr := cw.w.Write(append(b, e...))
	return errors.Join(werr, cw.w.Flush())
}

// chunkReader reads a body of chunks; a body that ended failed reads as the
// sender's error.
type chunkReader struct {
	r    *bufio.Reader
	left uint32
	err  error
}

func (cr *chunkReader) Read(p []byte) (int, error) {
	for cr.left == 0 {
		if cr.err != nil {
			return 0, cr.err
		}
		var h [4]byte
		if _, err := io.ReadFull(cr.r, h[:]); err != nil {
			cr.err = fmt.Errorf("cluster: call body cut short: %w", noEOF(err))
			return 0, cr.err
		}
		switch n := binary.BigEndian.Uint32(h[:]); {
		case n == 0:
			cr.err = io.EOF
		case n == chunkAbort:
			if _, err := io.ReadFull(cr.r, h[:]); err != nil {
				cr.err = fmt.Errorf("cluster: call body cut short: %w", noEOF(err))
				break
			}
			e := make([]byte, min(binary.BigEndian.Uint32(h[:]), 64<<10))
			if _, err := io.ReadFull(cr.r, e); err != nil {
				cr.err = fmt.Errorf("cluster: call body cut short: %w", noEOF(err))
				break
			}
			cr.err = fmt.Errorf("cluster: the sender failed midway: %w", decodeCallError(e))
		case n > maxCallBody:
			cr.err = fmt.Errorf("cluster: call body chunk of %d bytes is over the limit", n)
		default:
			cr.left = n
		}
	}
	if uint32(len(p)) > cr.left {
		p = p[:cr.left]
	}
	n, err := cr.r.Read(p)
	cr.left -= uint32(n)
	if err != nil && cr.left > 0 {
		cr.err = fmt.Errorf("cluster: call body cut short: %w", noEOF(err))
		return n, cr.err
	}
	return n, nil
}

// noEOF turns an io.EOF inside a body into io.ErrUnexpectedEOF: only the
// empty chunk ends a body well.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// routeHandler serves one op: it answers head (the op's head) with the
// op's answer, and, when stream is not nil, the answer body stream writes.
// body is the request body, nil when none came.
type routeHandler func(ctx context.Context, head []byte, body io.Reader) (answer []byte, stream func(io.Writer) error, err error)

// serve answers call streams until l closes: route calls, and the calls of
// the older framing from nodes of the previous version.
func (r *router) serve(l net.Listener) {
	defer r.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			_ = c.Close()
			return
		}
		r.wg.Add(1)
		go r.serveConn(c)
	}
}

// track registers a served call stream, or reports false once the node is
// stopping. A stream waits for its request without a deadline, so stopping
// the node aborts the ones still open (closeServed) rather than trusting
// the transport to end every session under them.
func (r *router) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.served[c] = struct{}{}
	return true
}

func (r *router) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.served, c)
	r.mu.Unlock()
}

// close refuses new calls, aborts the ones being served and waits for
// them, and closes idle streams of the older framing.
func (r *router) close() {
	r.cancel()
	r.mu.Lock()
	r.closed = true
	conns := r.served
	r.served = map[net.Conn]struct{}{}
	idle := r.idle
	r.idle = map[string][]*callConn{}
	r.mu.Unlock()
	for _, l := range idle {
		for _, cc := range l {
			_ = cc.c.Close()
		}
	}
	for c := range conns {
		// A deadline in the past first: closing a yamux stream is only a
		// half-close, which leaves a blocked reader waiting for the peer.
		_ = c.SetDeadline(time.Unix(1, 0))
		_ = c.Close()
	}
	r.legacy.closeAll()
	r.wg.Wait()
	r.legacyHTTP.CloseIdleConnections()
}

func (r *router) serveConn(c net.Conn) {
	defer r.wg.Done()
	defer c.Close()
	defer r.untrack(c)
	br := bufio.NewReaderSize(c, 4096)
	for {
		// An idle stream waits for its next call without a deadline
		// (close aborts it).
		_ = c.SetDeadline(time.Time{})
		op, body, err := readFrame(br)
		if err != nil {
			return
		}
		if op < rcPropose {
			r.serveLegacy(c, br, op, body)
			return
		}
		h, name := r.handler(op)
		if !r.serveRoute(c, br, op, body, h, name) {
			return
		}
	}
}

// serveRoute serves one route call whose head frame was read with h, the
// op's handler (nil: an unknown op), and reports whether the stream may
// carry another call (no body went either way and the caller stayed).
func (r *router) serveRoute(c net.Conn, br *bufio.Reader, op byte, frame []byte, h routeHandler, name string) bool {
	bw := bufio.NewWriterSize(c, 4096)
	answer := func(status byte, b []byte) error {
		h := [5]byte{status}
		binary.BigEndian.PutUint32(h[1:], uint32(len(b)))
		if _, err := bw.Write(h[:]); err != nil {
			return err
		}
		if _, err := bw.Write(b); err != nil {
			return err
		}
		return bw.Flush()
	}
	if len(frame) < routeHead || binary.BigEndian.Uint64(frame) != routeGuard {
		_ = answer(answerErr, encodeCallError(fmt.Errorf("%w: malformed call", ErrInvalidRequest)))
		return false
	}
	timeout := min(time.Duration(binary.BigEndian.Uint32(frame[8:]))*time.Millisecond, maxCallTimeout)
	flags, head := frame[12], frame[routeHead:]
	// The stream outlives the call a little: the answer that its time ran
	// out must still reach the caller.
	_ = c.SetDeadline(time.Now().Add(timeout + callGrace))
	ctx, cancel := context.WithTimeout(ServeLocally(context.Background()), timeout)
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()
	if h == nil {
		_ = answer(answerErr, encodeCallError(fmt.Errorf("%w: unknown call %d", ErrInvalidRequest, op)))
		return false
	}
	r.n.metrics.callsServed.WithLabelValues(name).Inc()
	var body io.Reader
	stayed := false
	if flags&flagBody != 0 {
		body = &chunkReader{r: br}
	} else {
		// Nothing more is to come from the caller until it has the
		// answer, but the end of the stream when it leaves: then the
		// call is dropped.
		w := watchCaller(br, cancel)
		h0 := h
		h = func(ctx context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
			res, stream, err := h0(ctx, head, body)
			stayed = w.stop(c)
			return res, stream, err
		}
	}
	res, stream, err := h(ctx, head, body)
	if err != nil {
		return answer(answerErr, encodeCallError(err)) == nil && stayed
	}
	flags = 0
	if stream != nil {
		flags = flagBody
	}
	if err := answer(answerOK, append([]byte{flags}, res...)); err != nil {
		return false
	}
	if stream == nil {
		return stayed
	}
	cw := chunkWriter{w: bw}
	err = stream(cw)
	if err != nil {
		r.n.log.Debug("a streamed call answer failed", "call", name, "error", err)
	}
	_ = cw.end(err)
	return false
}

// callerWatch reads a served call's stream while the call runs, for the
// end of the stream that says its caller left.
type callerWatch struct{ done chan error }

// watchCaller cancels a served call once its caller closes the stream (or
// the stream fails).
func watchCaller(br *bufio.Reader, cancel context.CancelFunc) *callerWatch {
	w := &callerWatch{done: make(chan error, 1)}
	go func() {
		_, err := br.ReadByte()
		if err == nil {
			err = errors.New("cluster: the caller wrote during its call")
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			cancel()
		}
		w.done <- err
	}()
	return w
}

// stop ends the watch before the answer is written (the caller may send
// its next call on the stream then) and reports whether the caller is
// still there, with nothing read.
func (w *callerWatch) stop(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Unix(1, 0))
	err := <-w.done
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
