package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/yamux"
)

// serveStream serves one inbound stream on its own goroutine: every RPC in
// flight has its own stream, so a heartbeat is never read after, or answered
// after, an AppendEntries or a snapshot of another stream. from is the
// peer's authenticated node id ("" without TLS). It reports whether it
// handed the stream to the application (app and call streams), which then
// owns it until the session ends.
func (n *Node) serveStream(st *yamux.Stream, peer Peer) (handedOff bool) {
	from := peer.Node
	var kind [1]byte
	_ = st.SetReadDeadline(time.Now().Add(n.cfg.RPCTimeout))
	if _, err := io.ReadFull(st, kind[:]); err != nil {
		abortStream(st)
		return false
	}
	_ = st.SetReadDeadline(time.Time{})
	switch kind[0] {
	case kindRPC:
		n.serveRPCs(st, from)
	case kindSnapshot:
		n.serveSnapshot(st, from)
	case kindApp:
		if n.app.offer(&peerStream{st, peer}) {
			return true // the application owns it now
		}
	case kindCall:
		if n.calls.offer(&peerStream{st, peer}) {
			return true
		}
	default:
		n.logger.Warn("unknown stream kind", "kind", kind[0], "remote", st.RemoteAddr().String())
	}
	abortStream(st)
	return false
}

// serveRPCs answers request frames until the peer closes the stream. An idle
// pooled stream waits here without a deadline; the peer owns its lifetime.
func (n *Node) serveRPCs(st *yamux.Stream, from string) {
	scratch := make([]byte, reqHeaderSize)
	for {
		gid, typ, body, err := readRequest(st, scratch)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, yamux.ErrStreamClosed) && !errors.Is(err, yamux.ErrSessionShutdown) {
				n.logger.Debug("rpc stream ended", "remote", st.RemoteAddr().String(), "error", err)
			}
			return
		}
		if len(body) > shrinkAfter {
			st.Shrink()
		}
		var resp any
		if typ == typeInstallSnapshot {
			err = errors.New("transport: InstallSnapshot must use a snapshot stream")
		} else {
			resp, err = n.handleRPC(gid, typ, body, from)
		}
		if err := n.writeResponse(st, typ, resp, err); err != nil {
			return
		}
	}
}

// handleRPC decodes a request, routes it to its group and waits for Raft's
// answer, once the sender passes authorize.
func (n *Node) handleRPC(gid uint64, typ uint8, body []byte, from string) (any, error) {
	cmd, err := decodeRequest(typ, body)
	if err != nil {
		return nil, err
	}
	if hb, ok := cmd.(*heartbeatsRequest); ok {
		if len(hb.reqs) > 0 {
			n.watchLeader(hb.reqs[0].Addr)
		}
		return n.handleHeartbeats(hb, from), nil
	}
	g := n.lookup(gid)
	if g == nil {
		return nil, fmt.Errorf("%w %d", ErrUnknownGroup, gid)
	}
	h, label, ok := rpcHeader(cmd)
	if !ok {
		return nil, fmt.Errorf("%w: rpc type %d", ErrMalformed, typ)
	}
	if err := n.authorize(g, from, h, label); err != nil {
		return nil, err
	}
	heartbeat := false
	if ae, ok := cmd.(*raft.AppendEntriesRequest); ok {
		heartbeat = isHeartbeat(ae)
		if heartbeat {
			n.watchLeader(ae.Addr)
		}
	}
	return g.dispatch(cmd, nil, heartbeat, n.cfg.RPCTimeout)
}

// dispatch hands an RPC to the group (its heartbeat handler or its consumer)
// and waits for the response, at most timeout: by then the sender has given
// up, and a Raft that was shut down without closing its transport never
// answers.
func (g *GroupTransport) dispatch(cmd any, r io.Reader, heartbeat bool, timeout time.Duration) (any, error) {
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: cmd, Reader: r, RespChan: respCh}
	if heartbeat {
		if fn := g.heartbeat.Load(); fn != nil {
			// Raft answers a heartbeat inside the handler, or not at all
			// (raft.go:processHeartbeat ignores it once shut down): no
			// timer needed on this path, the busiest of an idle node.
			(*fn)(rpc)
			select {
			case resp := <-respCh:
				return resp.Response, resp.Error
			default:
				return nil, fmt.Errorf("transport: group %d did not answer the heartbeat", g.gid)
			}
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case g.consumeCh <- rpc:
	case <-g.closed:
		return nil, g.errClosed()
	case <-g.node.done:
		return nil, ErrClosed
	case <-timer.C:
		return nil, fmt.Errorf("transport: group %d did not take the rpc within %v", g.gid, timeout)
	}
	select {
	case resp := <-respCh:
		return resp.Response, resp.Error
	case <-g.closed:
		return nil, g.errClosed()
	case <-g.node.done:
		return nil, ErrClosed
	case <-timer.C:
		return nil, fmt.Errorf("transport: group %d did not answer within %v", g.gid, timeout)
	}
}

// writeResponse writes a response frame: the encoded response, or the error
// text.
func (n *Node) writeResponse(st *yamux.Stream, typ uint8, resp any, rerr error) error {
	buf := getBuf()
	b := appendResponseHeader((*buf)[:0], statusOK)
	if rerr == nil {
		if resp == nil {
			rerr = fmt.Errorf("transport: group sent no response to rpc type %d", typ)
		} else {
			b, rerr = appendResponse(b, typ, resp)
		}
	}
	if rerr != nil {
		b = appendResponseHeader(b[:0], statusErr)
		b = append(b, errorString(rerr)...)
	}
	finishResponse(b, 0)
	// Not cleared afterwards: only responses are written on this stream
	// and each sets its own (each set allocates in yamux).
	_ = st.SetWriteDeadline(time.Now().Add(n.cfg.RPCTimeout))
	err := writeChunked(st, b)
	putBuf(buf, b)
	return err
}

// serveSnapshot receives one InstallSnapshot (see GroupTransport.InstallSnapshot).
func (n *Node) serveSnapshot(st *yamux.Stream, from string) {
	timeout := n.cfg.RPCTimeout
	_ = st.SetReadDeadline(time.Now().Add(timeout))
	gid, typ, body, err := readRequest(st, make([]byte, reqHeaderSize))
	if err != nil {
		return
	}
	var req *raft.InstallSnapshotRequest
	var g *GroupTransport
	if typ != typeInstallSnapshot {
		err = fmt.Errorf("transport: rpc type %d on a snapshot stream", typ)
	} else if req, err = decodeInstallSnapshotRequest(body); err == nil {
		if g = n.lookup(gid); g == nil {
			err = fmt.Errorf("%w %d", ErrUnknownGroup, gid)
		} else {
			err = n.authorize(g, from, &req.RPCHeader, labelInstallSnapshot)
		}
	}
	if err != nil {
		_ = n.writeResponse(st, typeInstallSnapshot, nil, err)
		return
	}
	// Go-ahead: an empty OK frame.
	if err := n.writeGoAhead(st); err != nil {
		return
	}
	sr := &snapshotReader{st: st, left: req.Size, idle: timeout}
	resp, err := g.dispatch(req, sr, false, snapshotTimeout(timeout, req.Size))
	_ = n.writeResponse(st, typeInstallSnapshot, resp, err)
}

func (n *Node) writeGoAhead(st *yamux.Stream) error {
	var b [respHeaderSize]byte
	b[0] = statusOK
	_ = st.SetWriteDeadline(time.Now().Add(n.cfg.RPCTimeout))
	_, err := st.Write(b[:])
	return err
}

// snapshotReader yields exactly the snapshot's Size bytes from the stream.
// Each read must make progress within idle, so a stalled sender fails the
// install instead of blocking the group's main loop forever.
type snapshotReader struct {
	st   *yamux.Stream
	left int64
	idle time.Duration
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	_ = r.st.SetReadDeadline(time.Now().Add(r.idle))
	m, err := r.st.Read(p)
	r.left -= int64(m)
	if r.left == 0 {
		r.st.Shrink()
		return m, nil
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}

// peerStream is an app or call stream handed to the application, with the
// peer its session authenticated (PeerOf).
type peerStream struct {
	*yamux.Stream
	peer Peer
}

// PeerNode returns the node id that the TLS certificate of the peer on the
// other end of an app or call stream (from AppListener or CallListener)
// names, so that the application can authorize node-to-node calls by node;
// "" without TLS, or for a conn the transport did not hand out.
func PeerNode(c net.Conn) string { return PeerOf(c).Node }

// PeerOf returns the node and role that the TLS certificate of the peer on
// the other end of an app or call stream names; the zero Peer without TLS,
// or for a conn the transport did not hand out.
func PeerOf(c net.Conn) Peer {
	if ps, ok := c.(*peerStream); ok {
		return ps.peer
	}
	return Peer{}
}
