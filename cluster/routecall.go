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

	"github.com/shardnet/shardnet/transport"
)

// The framing of route calls (route.go draws it): the calling side (call,
// with its pool of idle streams) and the serving side (serve).

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
	proof := appendProof(nil, proofFor(ctx, op), r.n.metaFSM.Applied())
	frame := make([]byte, 5, 5+routeHead+len(proof)+len(head))
	frame[0] = op
	binary.BigEndian.PutUint32(frame[1:], uint32(routeHead+len(proof)+len(head)))
	frame = binary.BigEndian.AppendUint64(frame, routeGuard)
	frame = binary.BigEndian.AppendUint32(frame, uint32(max(time.Until(deadline), time.Millisecond)/time.Millisecond))
	flags := byte(0)
	if body != nil {
		flags = flagBody
	}
	frame = append(append(append(frame, flags), proof...), head...)
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
	ans.body = &answerBody{r: chunkReader{r: cc.br}, close: func() { stop(); abort(); shrink(c) }}
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

// shrink gives back the receive buffer of a transport stream (yamux's
// Shrink) that carried a large body.
func shrink(c net.Conn) {
	if s, ok := c.(interface{ Shrink() }); ok {
		s.Shrink()
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

// Flush sends what was written so far (a meta watch's frames,
// metawatch.go, must not wait for a full buffer).
func (cw chunkWriter) Flush() error { return cw.w.Flush() }

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
	proof, metaIndex, head, err := readProof(head)
	if err == nil {
		err = r.authorize(ctx, op, head, proof, metaIndex, transport.PeerOf(c))
	}
	if err != nil {
		r.n.metrics.callsRefused.WithLabelValues(name).Inc()
		r.n.log.Debug("refused a route call", "call", name, "node", transport.PeerNode(c), "error", err)
		// A body the call carries is not read: the stream goes.
		return answer(answerErr, encodeCallError(err)) == nil && flags&flagBody == 0
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
	if body != nil {
		// A stream that carried a body (a file's chunk: megabytes) keeps
		// its receive buffer as long as the stream lives; give it back.
		shrink(c)
	}
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
