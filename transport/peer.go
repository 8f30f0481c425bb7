package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/yamux"
)

// peer is this node's outbound side towards one cluster address: one yamux
// session, dialed lazily and re-dialed after it breaks, and a small pool of
// idle RPC streams on it.
type peer struct {
	n    *Node
	addr string

	mu      sync.Mutex
	closed  bool
	sess    *yamux.Session
	idle    []*yamux.Stream
	dialing chan struct{} // non-nil while a dial runs; closed when it ends
	lastErr error         // the last dial failure, kept for dialBackoff
	// With TLS: node is the node the live session's certificate names, and
	// expect the node the last RPC's server id named (expectPeer); a
	// session to another node than expected is refused.
	node, expect string
	lastErrAt    time.Time
	// epoch names the live session: a number no earlier session to any
	// peer had (quiet.go: the quiet answers trust what a follower said
	// over this session only).
	epoch   uint64
	waiters int // callers in await

	// Prober state (probe.go).
	lastUsed atomic.Int64 // unix nanos of the last RPC or PeerHealthy call
	probing  bool         // a probe goroutine is running
	lastOK   time.Time    // the last answered probe
	refused  time.Time    // the last probe whose dial the peer's host refused
	healthy  bool         // as of the last probe tick
}

// peer returns the peer for addr, creating it on first use.
func (n *Node) peer(addr string) (*peer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	p := n.peers[addr]
	if p == nil {
		p = &peer{n: n, addr: addr}
		n.peers[addr] = p
	}
	p.lastUsed.Store(time.Now().UnixNano())
	return p, nil
}

// sessionEpoch returns the epoch of the node's live session to addr, 0 if
// it has none. A follower whose node restarted is reached over a new
// session, so what it said over the old one no longer answers for it
// (quiet.go).
func (n *Node) sessionEpoch(addr raft.ServerAddress) uint64 {
	n.mu.Lock()
	p := n.peers[string(addr)]
	n.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess == nil || p.sess.IsClosed() {
		return 0
	}
	return p.epoch
}

// epochOf returns the epoch of sess if it is still the peer's live
// session, else 0.
func (p *peer) epochOf(sess *yamux.Session) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess != sess || sess.IsClosed() {
		return 0
	}
	return p.epoch
}

// session returns the live session to the peer, dialing if needed. Dials
// are shared: concurrent callers wait for the one in progress, each until its
// own deadline or ctx. Within dialBackoff of a failed dial it fails at once.
func (p *peer) session(ctx context.Context, deadline time.Time) (*yamux.Session, error) {
	for {
		p.mu.Lock()
		sess, ch, err := p.sessionLocked()
		p.mu.Unlock()
		if ch == nil {
			return sess, err
		}
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
			timer.Stop()
			p.mu.Lock()
			err := p.lastErr
			fresh := p.sess != nil && !p.sess.IsClosed()
			p.mu.Unlock()
			if !fresh && err != nil {
				return nil, err
			}
		case <-timer.C:
			return nil, fmt.Errorf("waiting for dial: %w", context.DeadlineExceeded)
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("waiting for dial: %w", ctx.Err())
		}
	}
}

// sessionLocked, with p.mu held, returns the live session, or else the
// channel of the dial in progress (starting one unless the last dial failed
// less than dialBackoff ago), or else why there is neither: ErrClosed or the
// remembered dial failure.
func (p *peer) sessionLocked() (*yamux.Session, chan struct{}, error) {
	if p.closed {
		return nil, nil, ErrClosed
	}
	if p.sess != nil && !p.sess.IsClosed() {
		return p.sess, nil, nil
	}
	if p.dialing == nil {
		if since := time.Since(p.lastErrAt); p.lastErr != nil && since < dialBackoff {
			return nil, nil, fmt.Errorf("peer unreachable, dial failed %v ago: %w", since.Round(time.Millisecond), p.lastErr)
		}
		ch := make(chan struct{})
		p.dialing = ch
		if !p.n.goFunc(func() { p.dial(ch) }) {
			p.dialing = nil
			return nil, nil, ErrClosed
		}
	}
	return nil, p.dialing, nil
}

// await is session for the RPCs that carry replication: while the peer is
// unreachable (its dial fails or failed less than dialBackoff ago, or its
// session broke) it waits for the peer to answer again instead of failing,
// joining or starting a dial each time the dial backoff ends (a dial the
// prober starts wakes it too), until the peer answers, until passes, stop
// is closed (the group closed) or the node closes. See doc.go, "Replication
// waits for an unreachable peer", for why. Beyond maxWaiters callers
// waiting on the peer, it fails fast as session does.
func (p *peer) await(stop <-chan struct{}, until time.Time) (*yamux.Session, error) {
	p.mu.Lock()
	if !p.closed && p.sess != nil && !p.sess.IsClosed() {
		s := p.sess
		p.mu.Unlock()
		return s, nil
	}
	if p.waiters >= p.n.maxWaiters {
		p.mu.Unlock()
		return p.session(context.Background(), time.Now().Add(p.n.cfg.RPCTimeout))
	}
	p.waiters++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
	}()

	start := time.Now()
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	var lastErr error
	for {
		// A waiting RPC is a use: the prober keeps probing the peer.
		p.lastUsed.Store(time.Now().UnixNano())
		p.mu.Lock()
		sess, ch, err := p.sessionLocked()
		retry := dialBackoff - time.Since(p.lastErrAt)
		if err != nil && p.lastErr != nil {
			lastErr = p.lastErr
		}
		p.mu.Unlock()
		if sess != nil || errors.Is(err, ErrClosed) {
			return sess, err
		}
		left := time.Until(until)
		if left <= 0 {
			if lastErr == nil {
				lastErr = fmt.Errorf("waiting for dial: %w", context.DeadlineExceeded)
			}
			return nil, fmt.Errorf("peer unreachable for %v: %w", time.Since(start).Round(time.Millisecond), lastErr)
		}
		// ch is the dial in progress; without one the backoff is running
		// and no session can appear before it ends.
		d := left
		if ch == nil {
			d = min(max(retry, time.Millisecond), left)
		}
		timer.Reset(d)
		select {
		case <-ch:
		case <-timer.C:
		case <-stop:
			return nil, ErrClosed
		case <-p.n.done:
			return nil, ErrClosed
		}
	}
}

// dial connects, authenticates and starts a yamux client session, then
// publishes it (or the error) and closes ch.
func (p *peer) dial(ch chan struct{}) {
	n := p.n
	sess, node, err := n.dialSession(p.addr)
	p.mu.Lock()
	p.dialing = nil
	if err == nil && p.expect != "" && node != p.expect {
		_ = sess.Close()
		sess = nil
		err = fmt.Errorf("%w: the node at %s is %q, not %q", ErrHandshake, p.addr, node, p.expect)
		n.handshakeFailed("cluster peer is not the node its address belongs to", "peer", p.addr, "node", node, "want", p.expect)
	}
	if err == nil {
		// Checked again under p.mu: see Faults.Block.
		err = n.cfg.Faults.checkDial(p.addr)
		if err != nil {
			_ = sess.Close()
			sess = nil
		}
	}
	if err != nil {
		p.lastErr, p.lastErrAt = err, time.Now()
	} else if p.closed {
		_ = sess.Close()
		p.lastErr = ErrClosed
		sess = nil
	} else {
		p.lastErr = nil
		p.sess = sess
		p.epoch = n.epochs.Add(1)
		p.node = node
		p.idle = nil
	}
	close(ch)
	p.mu.Unlock()
	if sess == nil {
		return
	}
	n.metrics.sessions.Inc()
	// Watch the session so the gauge is right and the dead session's idle
	// streams are dropped at once, not on the next RPC.
	<-sess.CloseChan()
	n.abortSessionStreams(sess)
	n.metrics.sessions.Dec()
	p.mu.Lock()
	if p.sess == sess {
		p.sess = nil
		p.idle = nil
	}
	p.mu.Unlock()
}

// dialSession dials addr, authenticates and starts a yamux client session;
// with TLS it also returns the node the peer's certificate names.
func (n *Node) dialSession(addr string) (*yamux.Session, string, error) {
	if err := n.cfg.Faults.checkDial(addr); err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if n.ctx.Err() != nil {
			return nil, "", ErrClosed
		}
		return nil, "", err // a *net.OpError, which names the address
	}
	conn = n.cfg.Faults.freezable(conn)
	raw := conn // conn changes below; the closure must not read it
	stop := context.AfterFunc(n.ctx, func() { _ = raw.Close() })
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	var node string
	if n.cfg.TLS != nil {
		// TLS sits above the fault injector, which then delays and drops
		// records as it did plain frames.
		conn = n.cfg.Faults.wrap(addr, conn, n.goFunc)
		var tc net.Conn
		var p Peer
		tc, p, err = n.cfg.TLS.handshake(n.ctx, conn, true)
		if err == nil {
			conn, node = tc, p.Node
		}
	} else {
		err = clientHandshake(conn, n.cfg.ClusterKey)
		if err == nil {
			conn = n.cfg.Faults.wrap(addr, conn, n.goFunc)
		}
	}
	if !stop() {
		_ = conn.Close()
		return nil, "", ErrClosed
	}
	if err != nil {
		_ = conn.Close()
		if errors.Is(err, ErrHandshake) {
			n.handshakeFailed("cluster peer failed the handshake", "peer", addr, "error", err)
		}
		return nil, "", err
	}
	_ = conn.SetDeadline(time.Time{})
	sess, err := yamux.Client(newCoalescingConn(conn, n.goFunc, n.metrics.connWrites), n.ymux)
	if err != nil {
		_ = conn.Close()
		return nil, "", fmt.Errorf("start session: %w", err)
	}
	n.logger.Debug("connected to peer", "peer", addr, "node", node)
	return sess, node, nil
}

// stream returns an idle RPC stream to the peer, or opens one (fresh: its
// kind byte has not been written yet); see open for deadline, stop and wait.
func (p *peer) stream(deadline time.Time, stop <-chan struct{}, wait time.Duration) (st *yamux.Stream, fresh bool, err error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		st = p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if st.Session() == p.sess && !p.sess.IsClosed() {
			p.mu.Unlock()
			return st, false, nil
		}
		_ = st.Close()
	}
	p.mu.Unlock()
	st, err = p.open(deadline, stop, wait)
	return st, err == nil, err
}

// open opens a new stream to the peer. With wait zero it fails fast on an
// unreachable peer (session, waiting for a dial until deadline); otherwise
// it waits up to wait for the peer to answer again (await), and a session
// that breaks as the stream opens counts as unreachable too.
func (p *peer) open(deadline time.Time, stop <-chan struct{}, wait time.Duration) (*yamux.Stream, error) {
	if wait <= 0 {
		sess, err := p.session(context.Background(), deadline)
		if err != nil {
			return nil, err
		}
		return p.openStream(sess)
	}
	until := time.Now().Add(wait)
	for {
		sess, err := p.await(stop, until)
		if err != nil {
			return nil, err
		}
		st, err := p.openStream(sess)
		left := time.Until(until)
		if err == nil || left <= 0 {
			return st, err
		}
		// openStream closed the session, so await dials again; pause first
		// so a peer that drops every new session is not re-dialed in a
		// tight loop.
		pause := time.NewTimer(min(dialBackoff, left))
		select {
		case <-pause.C:
		case <-stop:
			pause.Stop()
			return nil, ErrClosed
		case <-p.n.done:
			pause.Stop()
			return nil, ErrClosed
		}
	}
}

// openStream opens a stream on sess. A session that cannot open streams is
// closed, so the next call dials a new one: that covers a session that went
// away and one that used up its 2^31 stream ids.
func (p *peer) openStream(sess *yamux.Session) (*yamux.Stream, error) {
	st, err := sess.OpenStream()
	if err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return st, nil
}

// release returns a healthy RPC stream to the idle pool, or closes it when
// the pool is full or the session changed. last is the size of the response
// just read (see shrinkAfter).
func (p *peer) release(st *yamux.Stream, last int) {
	if last > shrinkAfter {
		st.Shrink()
	}
	p.mu.Lock()
	if !p.closed && st.Session() == p.sess && len(p.idle) < maxIdleStreams {
		p.idle = append(p.idle, st)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = st.Close()
}

// expectPeer, with TLS, notes that the node at target is the one id names
// (a raft.Transport call's server id), so that a session to another node,
// one that took over the address, is refused: at dial, or here when it is
// already open.
func (n *Node) expectPeer(id raft.ServerID, target raft.ServerAddress) error {
	if n.cfg.TLS == nil || id == "" {
		return nil
	}
	p, err := n.peer(string(target))
	if err != nil {
		return err
	}
	want := NodeOf(id)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expect = want
	if p.sess != nil && !p.sess.IsClosed() && p.node != want {
		return fmt.Errorf("%w: the node at %s is %q, not %q", ErrHandshake, target, p.node, want)
	}
	return nil
}

func (p *peer) close() {
	p.mu.Lock()
	p.closed = true
	sess := p.sess
	p.sess, p.idle = nil, nil
	p.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
}
