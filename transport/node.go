package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/yamux"
	"github.com/prometheus/client_golang/prometheus"
)

// Sentinel errors.
var (
	ErrClosed       = errors.New("transport: closed")
	ErrGroupExists  = errors.New("transport: group already registered")
	ErrUnknownGroup = errors.New("transport: unknown group")
)

const (
	defaultDialTimeout = 2 * time.Second
	defaultRPCTimeout  = 10 * time.Second

	// dialBackoff: after a failed dial to a peer, RPCs to it fail at once for
	// this long instead of each waiting out its own DialTimeout. Raft's own
	// retry backoff (10 ms doubling) would otherwise turn a dead peer into a
	// dial storm across hundreds of groups.
	dialBackoff = 300 * time.Millisecond

	// maxIdleStreams bounds the idle RPC streams kept per peer. Each idle
	// stream costs one goroutine on the peer and a few hundred bytes on
	// both sides; under a burst beyond it, extra streams are opened and
	// closed after use (opening is one frame, no round trip).
	maxIdleStreams = 16

	// defaultMaxWaiters bounds the replication RPCs that wait for one
	// unreachable peer at a time; more fail at once. Each is a Raft
	// replication goroutine blocked in the transport (at most one per group
	// led from here, plus any left from an earlier leadership term), which
	// costs the transport one timer: the bound only guards against a
	// caller gone wrong. 1000 replicas per node lead about 333 groups.
	defaultMaxWaiters = 4096

	// pipelineDepth bounds AppendEntries in flight on one pipeline.
	// BenchmarkRaftApply over loopback (2 vCPU, 3 runs each, µs per Apply):
	// depth 2: 8.6-17 (1 group), 28-49 (16 groups); depth 8: 10.3-10.8,
	// 25-34; depth 64: 12-16, 21-47 (more, smaller RPCs: 0.6 per Apply
	// against 0.23 at depth 8). 8 is the steadiest; a deeper pipeline only
	// pays on high-latency links.
	pipelineDepth = 8

	// snapshotTimeoutScale: the final InstallSnapshot response may take
	// RPCTimeout per this many bytes (the follower spools, then restores),
	// as NetworkTransport's TimeoutScale.
	snapshotTimeoutScale = 256 << 10
)

// Config configures a Node.
type Config struct {
	BindAddr      string        // "127.0.0.1:7001"; ":0"-style ports allowed (tests)
	AdvertiseAddr string        // what peers dial; default: the bound listener address (required when BindAddr has no host)
	ClusterKey    []byte        // shared secret; peers must prove it. Empty key = unauthenticated (allowed, logged at WARN once). Unused with TLS
	Logger        hclog.Logger  // default: hclog.NewNullLogger()
	DialTimeout   time.Duration // default 2s
	RPCTimeout    time.Duration // default 10s for non-snapshot RPCs
	// TLS, when set, makes the cluster port speak mutual TLS 1.3 with
	// certificates of the cluster CA instead of the ClusterKey handshake,
	// and gives every inbound RPC its sender's authenticated node id
	// (tls.go, auth.go). Reload it to rotate certificates.
	TLS *Certs
	// HeartbeatBatch, when positive, is how long a heartbeat waits for
	// others to the same peer so that they travel in one frame
	// (heartbeat.go); 0 sends each on its own.
	HeartbeatBatch time.Duration
	Registerer     prometheus.Registerer // optional

	// ReplicationWait bounds how long the RPCs that carry replication
	// (AppendEntries other than heartbeats, InstallSnapshot, and opening an
	// AppendEntries pipeline) wait for an unreachable peer to answer again
	// before they fail. Default: RPCTimeout; negative: they fail at once, as
	// heartbeats and votes always do. See doc.go, "Replication waits for an
	// unreachable peer".
	ReplicationWait time.Duration

	// OnPeerDown, if set, is called (on its own goroutine) when the prober
	// finds a peer that answered before unresponsive. See PeerHealthy.
	OnPeerDown func(addr string)
	// OnPeerUp, if set, is called (on its own goroutine) when the prober
	// finds a peer answering that was not healthy before: probed for the
	// first time, or back after OnPeerDown.
	OnPeerUp func(addr string)

	// Faults, if set, injects network faults into this node's outbound
	// sessions (tests only; see Faults). Nil changes nothing.
	Faults *Faults
}

// Node is the node-level transport: one listener, one multiplexed session
// per peer, and a GroupTransport per Raft group hosted here.
type Node struct {
	cfg     Config
	logger  hclog.Logger
	ln      net.Listener
	addr    raft.ServerAddress
	metrics *metrics
	quiet   quietCount    // appends answered locally (quiet.go)
	epochs  atomic.Uint64 // the last session epoch given (peer.epoch)
	ymux    *yamux.Config
	app     *appListener

	batchersMu sync.Mutex
	batchers   map[raft.ServerAddress]*hbBatcher // heartbeat batching per peer (heartbeat.go)
	calls      *appListener

	ctx    context.Context // cancelled by Close; aborts dials and handshakes
	cancel context.CancelFunc
	done   <-chan struct{}

	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
	peers   map[string]*peer
	inbound map[*yamux.Session]*streamSet

	groupsMu sync.RWMutex
	groups   map[uint64]*GroupTransport

	fence fence // server ids refused in every group (fence.go)

	// inflight maps each stream an outbound RPC or pipeline is using to its
	// group, so GroupTransport.Close can abort them. Node-level so an idle
	// group carries no map of its own.
	inflightMu sync.Mutex
	inflight   map[*yamux.Stream]*GroupTransport

	// maxWaiters bounds the replication RPCs waiting for one unreachable
	// peer (peer.await); defaultMaxWaiters, lowered by tests.
	maxWaiters int

	// lastHandshakeWarn (unix nanos) rate-limits handshake warnings: a
	// peer with the wrong key is re-dialed every few hundred milliseconds.
	lastHandshakeWarn atomic.Int64
	// lastRefusedWarn likewise rate-limits warnings of refused RPCs
	// (auth.go): a stranger's heartbeats arrive many times a second.
	lastRefusedWarn atomic.Int64
}

// handshakeWarnEvery: at most one WARN per this period for failed
// handshakes; the others go to DEBUG. The metric counts them all.
const handshakeWarnEvery = 30 * time.Second

func (n *Node) handshakeFailed(msg string, args ...any) {
	n.metrics.handshakeFailures.Inc()
	now := time.Now().UnixNano()
	last := n.lastHandshakeWarn.Load()
	if now-last >= int64(handshakeWarnEvery) && n.lastHandshakeWarn.CompareAndSwap(last, now) {
		n.logger.Warn(msg, args...)
		return
	}
	n.logger.Debug(msg, args...)
}

func (c *Config) validate() error {
	if c.BindAddr == "" {
		return errors.New("transport: BindAddr is required")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("transport: BindAddr %q: %w", c.BindAddr, err)
	}
	if c.AdvertiseAddr != "" {
		host, port, err := net.SplitHostPort(c.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("transport: AdvertiseAddr %q: %w", c.AdvertiseAddr, err)
		}
		if host == "" || port == "" || port == "0" {
			return fmt.Errorf("transport: AdvertiseAddr %q must name a host and a port", c.AdvertiseAddr)
		}
	}
	if c.DialTimeout < 0 || c.RPCTimeout < 0 {
		return errors.New("transport: timeouts must not be negative")
	}
	return nil
}

// New validates cfg, starts listening on cfg.BindAddr and serves peers until
// Close.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.RPCTimeout == 0 {
		cfg.RPCTimeout = defaultRPCTimeout
	}
	if cfg.ReplicationWait == 0 {
		cfg.ReplicationWait = cfg.RPCTimeout
	}
	cfg.ClusterKey = append([]byte(nil), cfg.ClusterKey...)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen on %s: %w", cfg.BindAddr, err)
	}
	addr := cfg.AdvertiseAddr
	if addr == "" {
		tcp := ln.Addr().(*net.TCPAddr)
		if tcp.IP.IsUnspecified() {
			_ = ln.Close()
			return nil, fmt.Errorf("transport: BindAddr %q has no host to advertise: set AdvertiseAddr", cfg.BindAddr)
		}
		addr = tcp.String()
	}
	logger := cfg.Logger.Named("transport")
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:      cfg,
		logger:   logger,
		ln:       ln,
		addr:     raft.ServerAddress(addr),
		metrics:  m,
		ymux:     yamuxConfig(logger),
		ctx:      ctx,
		cancel:   cancel,
		done:     ctx.Done(),
		peers:    make(map[string]*peer),
		inbound:  make(map[*yamux.Session]*streamSet),
		groups:   make(map[uint64]*GroupTransport),
		inflight: make(map[*yamux.Stream]*GroupTransport),

		maxWaiters: defaultMaxWaiters,
	}
	n.batchers = map[raft.ServerAddress]*hbBatcher{}
	n.app = newAppListener(n.addr, n.done)
	n.calls = newAppListener(n.addr, n.done)
	cfg.Faults.attach(n)
	if cfg.TLS == nil && len(cfg.ClusterKey) == 0 {
		logger.Warn("no cluster key: the cluster port accepts any peer (set a cluster key outside tests)")
	}
	n.goFunc(n.acceptLoop)
	n.goFunc(n.probeLoop)
	return n, nil
}

// yamuxConfig: keepalive on so a silently dead peer is noticed; the stream
// window (streamWindow); a backlog for bursts of streams; yamux's own logging
// routed into hclog (its "[ERR]"/"[WARN]" prefixes become levels).
func yamuxConfig(logger hclog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 1024 // bursts of heartbeats from hundreds of groups open streams at once
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxStreamWindowSize = streamWindow
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = time.Minute
	c.LogOutput = nil
	c.Logger = logger.Named("yamux").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	return c
}

// streamWindow is the per-stream yamux receive window: the most a stream
// can have in flight before the receiver reads, so also the most a slow
// reader (a snapshot being spooled) buffers per stream. RPC frames are read as
// they arrive, and streams give a large buffer back after use
// (shrinkAfter). Measured with BenchmarkAppendEntries over loopback (2 vCPU):
// 4 × 1 MiB entries moved at 570-590 MB/s with a 1 MiB window and 430-470 MB/s
// with 4 or 16 MiB (a larger window lets yamux's receive buffer grow and be
// copied more); 64 × 4 KiB within noise of each other. 1 MiB still allows
// ~1 GB/s per stream at 1 ms RTT; raise it for high-latency links.
const streamWindow = 1 << 20

// goFunc runs f on a goroutine Close waits for; it reports false (and runs
// nothing) once the node is closed.
func (n *Node) goFunc(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// replicationWait is how long replication RPCs wait for an unreachable
// peer; zero when Config.ReplicationWait is negative.
func (n *Node) replicationWait() time.Duration { return max(n.cfg.ReplicationWait, 0) }

// Addr returns the advertised address: the raft.ServerAddress of every group
// replica on this node.
func (n *Node) Addr() raft.ServerAddress { return n.addr }

// AppListener returns the listener for app streams peers open with DialApp.
// Closing it refuses further app streams; the cluster port stays open.
func (n *Node) AppListener() net.Listener { return n.app }

// CallListener returns the listener for call streams peers open with
// DialCall: the same kind of opaque stream as an app stream, kept apart so
// that the application can speak a second protocol (compact node-to-node
// calls beside HTTP) without sniffing the first bytes.
func (n *Node) CallListener() net.Listener { return n.calls }

// Group registers Raft group gid on this node and returns its transport.
// The group's replicas on other nodes reach it at Addr().
func (n *Node) Group(gid uint64) (*GroupTransport, error) {
	n.groupsMu.Lock()
	defer n.groupsMu.Unlock()
	select {
	case <-n.done:
		return nil, ErrClosed
	default:
	}
	if _, ok := n.groups[gid]; ok {
		return nil, fmt.Errorf("%w: %d", ErrGroupExists, gid)
	}
	g := &GroupTransport{
		node:      n,
		gid:       gid,
		consumeCh: make(chan raft.RPC),
		closed:    make(chan struct{}),
	}
	n.groups[gid] = g
	return g, nil
}

func (n *Node) lookup(gid uint64) *GroupTransport {
	n.groupsMu.RLock()
	g := n.groups[gid]
	n.groupsMu.RUnlock()
	return g
}

func (n *Node) unregister(g *GroupTransport) {
	n.groupsMu.Lock()
	if n.groups[g.gid] == g {
		delete(n.groups, g.gid)
	}
	n.groupsMu.Unlock()
}

// Close stops the listener, closes every session and group, and waits for
// the transport's goroutines. Raft instances using its groups should be
// shut down first; their RPCs fail with ErrClosed after this.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.cancel()
	n.cfg.Faults.detach(n)
	err := n.ln.Close()
	peers := n.peers
	n.peers = map[string]*peer{}
	inbound := n.inbound
	n.inbound = map[*yamux.Session]*streamSet{}
	n.mu.Unlock()

	n.groupsMu.Lock()
	groups := n.groups
	n.groups = map[uint64]*GroupTransport{}
	n.groupsMu.Unlock()
	for _, g := range groups {
		_ = g.Close()
	}
	for _, p := range peers {
		p.close()
	}
	for s, streams := range inbound {
		streams.abortAll()
		_ = s.Close()
	}
	_ = n.app.Close()
	_ = n.calls.Close()
	n.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: close listener: %w", err)
	}
	return nil
}

// acceptLoop accepts cluster connections; each is authenticated and served
// on its own goroutine so a slow handshake cannot hold up the others.
func (n *Node) acceptLoop() {
	var delay time.Duration
	for {
		conn, err := n.ln.Accept()
		if err != nil {
			select {
			case <-n.done:
				return
			default:
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			n.logger.Error("accept failed", "error", err, "retry_in", delay)
			select {
			case <-n.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if !n.goFunc(func() { n.serveConn(conn) }) {
			_ = conn.Close()
			return
		}
	}
}

// serveConn authenticates an inbound connection and serves its streams.
func (n *Node) serveConn(conn net.Conn) {
	conn = n.cfg.Faults.freezable(conn)
	raw := conn // conn changes below; the closure must not read it
	stop := context.AfterFunc(n.ctx, func() { _ = raw.Close() })
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	// from is the peer's authenticated node and role; empty without TLS,
	// where the cluster key proves membership but not who the peer is.
	var from Peer
	var err error
	if n.cfg.TLS != nil {
		var tc net.Conn
		tc, from, err = n.cfg.TLS.handshake(n.ctx, conn, false)
		if err == nil {
			conn = tc
		}
	} else {
		err = serverHandshake(conn, n.cfg.ClusterKey)
	}
	if !stop() || err != nil {
		_ = conn.Close()
		if err != nil && n.ctx.Err() == nil {
			n.handshakeFailed("rejected cluster connection", "remote", conn.RemoteAddr().String(), "error", err)
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	sess, err := yamux.Server(newCoalescingConn(conn, n.goFunc, n.metrics.connWrites), n.ymux)
	if err != nil { // only a config error
		_ = conn.Close()
		n.logger.Error("start session", "error", err)
		return
	}
	streams := newStreamSet()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = sess.Close()
		return
	}
	n.inbound[sess] = streams
	n.mu.Unlock()
	n.metrics.sessions.Inc()
	// However the session ends (peer gone, keepalive failed, closed here),
	// AcceptStream returns at once and this releases its streams from
	// their reads (streamset.go).
	defer func() {
		streams.abortAll()
		_ = sess.Close()
		n.metrics.sessions.Dec()
		n.mu.Lock()
		delete(n.inbound, sess)
		n.mu.Unlock()
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		if !streams.add(st) {
			abortStream(st)
			return
		}
		if !n.goFunc(func() {
			if !n.serveStream(st, from) {
				streams.remove(st)
			}
		}) {
			streams.remove(st)
			_ = st.Close()
			return
		}
	}
}

// DialApp opens an app stream to the node at addr (its cluster address),
// over the same authenticated session Raft uses. The peer receives it from
// its AppListener.
func (n *Node) DialApp(ctx context.Context, addr string) (net.Conn, error) {
	return n.dialStream(ctx, addr, kindApp, "app")
}

// DialCall opens a call stream to the node at addr; the peer receives it
// from its CallListener.
func (n *Node) DialCall(ctx context.Context, addr string) (net.Conn, error) {
	return n.dialStream(ctx, addr, kindCall, "call")
}

func (n *Node) dialStream(ctx context.Context, addr string, kind byte, what string) (net.Conn, error) {
	deadline := time.Now().Add(n.cfg.DialTimeout + handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	p, err := n.peer(addr)
	if err != nil {
		return nil, err
	}
	sess, err := p.session(ctx, deadline)
	if err != nil {
		return nil, fmt.Errorf("transport: %s stream to %s: %w", what, addr, err)
	}
	st, err := p.openStream(sess)
	if err != nil {
		return nil, fmt.Errorf("transport: %s stream to %s: %w", what, addr, err)
	}
	_ = st.SetWriteDeadline(deadline)
	if _, err := st.Write([]byte{kind}); err != nil {
		abortStream(st)
		return nil, fmt.Errorf("transport: open %s stream to %s: %w", what, addr, err)
	}
	_ = st.SetWriteDeadline(time.Time{})
	return st, nil
}

// abortStream makes any Read or Write blocked on st return at once, then
// closes it. yamux's Close alone is a half-close that leaves a blocked
// reader waiting for the peer.
func abortStream(st *yamux.Stream) {
	expire(st)
	_ = st.Close()
}

// expire gives st a deadline in the past: a Read or Write blocked on it, or
// spinning in it after its session ended (streamset.go), returns at once.
func expire(st *yamux.Stream) { _ = st.SetDeadline(time.Unix(1, 0)) }

func (n *Node) trackStream(st *yamux.Stream, g *GroupTransport) bool {
	n.inflightMu.Lock()
	defer n.inflightMu.Unlock()
	if g.isClosed() {
		return false
	}
	n.inflight[st] = g
	return true
}

func (n *Node) untrackStream(st *yamux.Stream) {
	n.inflightMu.Lock()
	delete(n.inflight, st)
	n.inflightMu.Unlock()
}

// abortSessionStreams aborts the outbound streams in use on sess, which has
// ended: their readers would spin until their deadlines (streamset.go).
func (n *Node) abortSessionStreams(sess *yamux.Session) {
	for _, st := range n.takeInflight(func(st *yamux.Stream, _ *GroupTransport) bool { return st.Session() == sess }) {
		abortStream(st)
	}
}

// abortGroupStreams aborts the outbound streams g is using. The caller has
// closed g, so trackStream admits no new ones.
func (n *Node) abortGroupStreams(g *GroupTransport) {
	for _, st := range n.takeInflight(func(_ *yamux.Stream, owner *GroupTransport) bool { return owner == g }) {
		abortStream(st)
	}
}

// takeInflight removes from the in-flight set, and returns, the streams
// match selects.
func (n *Node) takeInflight(match func(*yamux.Stream, *GroupTransport) bool) []*yamux.Stream {
	var streams []*yamux.Stream
	n.inflightMu.Lock()
	defer n.inflightMu.Unlock()
	for st, owner := range n.inflight {
		if match(st, owner) {
			streams = append(streams, st)
			delete(n.inflight, st)
		}
	}
	return streams
}

// appListener hands app streams accepted on the cluster port to the
// application (an http.Server for one-hop forwarding).
type appListener struct {
	addr     net.Addr
	ch       chan net.Conn
	closed   chan struct{}
	once     sync.Once
	nodeDone <-chan struct{}
}

func newAppListener(addr raft.ServerAddress, nodeDone <-chan struct{}) *appListener {
	return &appListener{addr: clusterAddr(addr), ch: make(chan net.Conn), closed: make(chan struct{}), nodeDone: nodeDone}
}

func (l *appListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *appListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *appListener) Addr() net.Addr { return l.addr }

// offer hands c to Accept, or reports false when the listener or the node
// closed first.
func (l *appListener) offer(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	case <-l.nodeDone:
		return false
	}
}

// clusterAddr is a node's cluster address as a net.Addr.
type clusterAddr string

func (a clusterAddr) Network() string { return "tcp" }
func (a clusterAddr) String() string  { return string(a) }

// errorString returns err's text, or a placeholder for a nil error that
// should have been set.
func errorString(err error) string {
	if err == nil {
		return "transport: unknown error"
	}
	return err.Error()
}

var _ io.Closer = (*Node)(nil)
