package transport

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrBlocked is returned (wrapped) by dials to a peer that a Faults rule
// blocks.
var ErrBlocked = errors.New("transport: peer blocked by fault injection")

// Faults injects network faults into the outbound side of the Nodes it is
// given to (Config.Faults), for tests of the layers above: partitions and
// slow links on real TCP. A nil *Faults injects nothing, and a Node without
// one takes none of these code paths.
//
// Rules are per peer address (the peer's advertised cluster address) and act
// only on the sessions this node dials: a node never learns which peer an
// inbound connection comes from, since the handshake carries no identity.
// Each node dials its own outbound session to each peer and sends its
// requests only there (a peer's answers come back on the same session), so
// blocking X on this node stops every request this node sends to X, and
// blocking in both directions needs a rule on both nodes. Delays likewise
// slow only the requests this node sends (the bytes it writes); a symmetric
// delay rule on both nodes adds the delay to each direction's requests.
//
// A Faults value outlives the Nodes it is attached to, so rules survive a
// node restart that reuses it. Gossip (memberlist) and the HTTP API do not go
// through this transport and are not affected.
type Faults struct {
	mu      sync.Mutex
	blocked map[string]bool
	delay   map[string]time.Duration
	held    map[string]chan struct{} // closed by Release
	nodes   map[*Node]struct{}
	thawed  chan struct{} // non-nil while frozen (Freeze); closed by Thaw
}

// NewFaults returns a Faults with no rules.
func NewFaults() *Faults {
	return &Faults{blocked: map[string]bool{}, delay: map[string]time.Duration{}, held: map[string]chan struct{}{},
		nodes: map[*Node]struct{}{}}
}

// Hold keeps what this node reads from its sessions to addr (the peer's
// answers) from reaching it until Release: the bytes arrive and wait, as
// they would in the socket of a process that is paused. Reads already
// returned are not taken back.
func (f *Faults) Hold(addr string) {
	f.mu.Lock()
	if f.held[addr] == nil {
		f.held[addr] = make(chan struct{})
	}
	f.mu.Unlock()
}

// Release hands over what Hold kept, in order, and lets reads through.
func (f *Faults) Release(addr string) {
	f.mu.Lock()
	if ch := f.held[addr]; ch != nil {
		close(ch)
		delete(f.held, addr)
	}
	f.mu.Unlock()
}

// waitReleased blocks while addr is held, or until done is closed.
func (f *Faults) waitReleased(addr string, done <-chan struct{}) {
	f.mu.Lock()
	ch := f.held[addr]
	f.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-done:
	}
}

// Block drops everything this node sends to addr: its sessions to addr are
// closed at once (RPCs and app streams in flight on them fail) and dials to
// addr fail with ErrBlocked until Unblock or Heal.
func (f *Faults) Block(addr string) {
	f.mu.Lock()
	f.blocked[addr] = true
	nodes := f.attached()
	f.mu.Unlock()
	// A dial that saw no rule publishes its session under the peer's lock
	// only after checking again (peer.dial), so either it sees the rule or
	// its session is already there for dropPeer to close.
	for _, n := range nodes {
		n.dropPeer(addr)
	}
}

// Unblock lets this node dial addr again (after the transport's dial
// backoff, at most 300 ms).
func (f *Faults) Unblock(addr string) {
	f.mu.Lock()
	delete(f.blocked, addr)
	f.mu.Unlock()
}

// Delay holds every write this node makes to its sessions to addr for d
// before it reaches the socket, in order; d <= 0 removes the rule. It takes
// effect on writes made after the call, on existing sessions too.
func (f *Faults) Delay(addr string, d time.Duration) {
	f.mu.Lock()
	if d <= 0 {
		delete(f.delay, addr)
	} else {
		f.delay[addr] = d
	}
	f.mu.Unlock()
}

// Heal removes every rule, and thaws a frozen node.
func (f *Faults) Heal() {
	f.mu.Lock()
	clear(f.blocked)
	clear(f.delay)
	for _, ch := range f.held {
		close(ch)
	}
	clear(f.held)
	f.mu.Unlock()
	f.Thaw()
}

// Freeze makes the node stop answering on its cluster port as a process
// stopped with SIGSTOP would, but for that port only: every connection it
// has or gets, inbound and outbound, stays open, and nothing more is read
// from or written to any of them (handshakes included) until Thaw. Its
// peers' requests get no answer and no error; their connections break only
// when their own timeouts say so (yamux keepalive, call deadlines). Unlike
// Block, which closes sessions at once and refuses dials, so that callers
// learn of the loss at once. The node's Raft groups, gossip and HTTP API
// keep running.
func (f *Faults) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed == nil {
		f.thawed = make(chan struct{})
	}
}

// Thaw undoes Freeze: held reads and writes go on.
func (f *Faults) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed != nil {
		close(f.thawed)
		f.thawed = nil
	}
}

// holdWhileFrozen returns once the node is not frozen, or closed is.
func (f *Faults) holdWhileFrozen(closed <-chan struct{}) error {
	f.mu.Lock()
	thawed := f.thawed
	f.mu.Unlock()
	if thawed == nil {
		return nil
	}
	select {
	case <-thawed:
		return nil
	case <-closed:
		return net.ErrClosed
	}
}

// freezable wraps a raw cluster connection (before its handshake) so that
// Freeze holds its reads and writes; conn itself when f is nil.
func (f *Faults) freezable(conn net.Conn) net.Conn {
	if f == nil {
		return conn
	}
	return &freezeConn{Conn: conn, f: f, closed: make(chan struct{})}
}

// freezeConn holds reads and writes while its Faults is frozen. A read
// that was already waiting on the socket when the freeze began gets its
// bytes, but they are handed over only after the thaw.
type freezeConn struct {
	net.Conn
	f         *Faults
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *freezeConn) Read(p []byte) (int, error) {
	if err := c.f.holdWhileFrozen(c.closed); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if herr := c.f.holdWhileFrozen(c.closed); herr != nil {
		return 0, herr
	}
	return n, err
}

func (c *freezeConn) Write(p []byte) (int, error) {
	if err := c.f.holdWhileFrozen(c.closed); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *freezeConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// Blocked reports whether addr is blocked.
func (f *Faults) Blocked(addr string) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[addr]
}

func (f *Faults) delayFor(addr string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay[addr]
}

func (f *Faults) attached() []*Node {
	out := make([]*Node, 0, len(f.nodes))
	for n := range f.nodes {
		out = append(out, n)
	}
	return out
}

func (f *Faults) attach(n *Node) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.nodes[n] = struct{}{}
	f.mu.Unlock()
}

func (f *Faults) detach(n *Node) {
	if f == nil {
		return
	}
	f.mu.Lock()
	delete(f.nodes, n)
	f.mu.Unlock()
}

// checkDial fails a dial to a blocked peer.
func (f *Faults) checkDial(addr string) error {
	if f.Blocked(addr) {
		return fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	return nil
}

// wrap returns conn, an authenticated connection to addr, with delays
// applied to its writes; conn itself when f is nil.
func (f *Faults) wrap(addr string, conn net.Conn, start func(func()) bool) net.Conn {
	if f == nil {
		return conn
	}
	dc := &delayConn{Conn: conn, f: f, addr: addr, wake: make(chan struct{}, 1), done: make(chan struct{})}
	dc.cond.L = &dc.mu
	if !start(dc.loop) {
		_ = conn.Close()
		dc.err = net.ErrClosed
	}
	return dc
}

// dropPeer closes the outbound session to addr, if any; the peer stays
// usable and re-dials on next use.
func (n *Node) dropPeer(addr string) {
	n.mu.Lock()
	p := n.peers[addr]
	n.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	sess := p.sess
	p.sess, p.idle = nil, nil
	p.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
}

// Read holds what it read while a Hold rule is in force.
func (dc *delayConn) Read(p []byte) (int, error) {
	n, err := dc.Conn.Read(p)
	dc.f.waitReleased(dc.addr, dc.done)
	return n, err
}

// delayConn delays each write by the rule in force when it was made. With
// no delay and nothing queued a write goes straight through; otherwise it is
// queued and the loop writes it when due, so bytes keep their order.
type delayConn struct {
	net.Conn
	f    *Faults
	addr string
	wake chan struct{} // a chunk was queued
	done chan struct{} // closed by Close

	mu      sync.Mutex
	cond    sync.Cond // queue shrank or writing ended
	queue   []delayedChunk
	queued  int  // bytes in queue
	writing bool // a write to Conn is running (direct or from loop)
	err     error
	closed  bool
}

type delayedChunk struct {
	due time.Time
	b   []byte
}

// maxDelayed bounds the bytes queued behind a delay; Write blocks beyond,
// which pushes back on yamux as a slow link would.
const maxDelayed = 4 << 20

func (c *delayConn) Write(p []byte) (int, error) {
	d := c.f.delayFor(c.addr)
	c.mu.Lock()
	for c.err == nil && c.queued >= maxDelayed {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if d <= 0 && len(c.queue) == 0 {
		for c.writing && c.err == nil {
			c.cond.Wait()
		}
		if c.err != nil || len(c.queue) > 0 {
			// Closed, or the loop raced ahead of us: fall through to queue.
		} else {
			c.writing = true
			c.mu.Unlock()
			n, err := c.Conn.Write(p)
			c.mu.Lock()
			c.writing = false
			if err != nil && c.err == nil {
				c.err = err
			}
			c.cond.Broadcast()
			c.mu.Unlock()
			return n, err
		}
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.queue = append(c.queue, delayedChunk{due: time.Now().Add(d), b: append([]byte(nil), p...)})
	c.queued += len(p)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *delayConn) loop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		for c.err == nil && (len(c.queue) == 0 || c.writing) {
			if len(c.queue) == 0 {
				c.mu.Unlock()
				select {
				case <-c.wake:
				case <-c.done:
					return
				}
				c.mu.Lock()
				continue
			}
			c.cond.Wait() // a direct write is running
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		head := c.queue[0]
		c.mu.Unlock()
		if wait := time.Until(head.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		}
		c.mu.Lock()
		c.queue = c.queue[1:]
		c.queued -= len(head.b)
		c.writing = true
		c.mu.Unlock()
		_, err := c.Conn.Write(head.b)
		c.mu.Lock()
		c.writing = false
		if err != nil && c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			_ = c.Conn.Close()
			return
		}
	}
}

func (c *delayConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	c.queue, c.queued = nil, 0
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}
