// Package testcluster starts real shardnet nodes in-process on loopback,
// each with its own data dir, TCP ports and HTTP API, for tests of
// multi-node behaviour.
//
// It leaves what to test to the tests: it only starts, kills, restarts and
// waits. Everything between nodes is real TCP, real disks and real fsync.
package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/agent"
	"github.com/shardnet/shardnet/server"
	"github.com/shardnet/shardnet/shard"
	"github.com/shardnet/shardnet/shard/logstore"
	"github.com/shardnet/shardnet/transport"
)

// Options shape a test cluster.
type Options struct {
	Core     int    // core nodes (the meta group); at least 1
	Resource int    // resource nodes
	Token    string // operator token; "" disables auth
	// ChannelRaft overrides the test defaults for channel groups.
	ChannelRaft shard.RaftTiming
	// MetaRaft tunes the meta group (zero fields: cluster.MetaRaftTiming),
	// e.g. to compact its log after a few entries.
	MetaRaft shard.RaftTiming
	// LogLevel of the nodes' logs, written through t.Log (default: warn;
	// SHARDNET_TEST_LOG overrides).
	LogLevel string
	// MaxInFlight bounds each channel's proposals in flight (0: default).
	MaxInFlight int
	// LeaderRebalance is the nodes' leader rebalance interval (0: the
	// default, negative: off).
	LeaderRebalance time.Duration
	// HashCheckInterval is how often channel leaders propose a hash check
	// (0: the default, negative: off).
	HashCheckInterval time.Duration
	// ChunkGCInterval and ChunkGCGrace set the nodes' chunk collector
	// (cluster.Config; 0: the defaults).
	ChunkGCInterval, ChunkGCGrace time.Duration
	// HTTP sets the nodes' HTTP connection limits and timeouts (zero
	// fields: the defaults).
	HTTP server.Limits
	// Insecure runs the cluster port with the shared cluster key instead of
	// mutual TLS (the default: a CA per cluster, a certificate per node).
	Insecure bool
	// CoreWithoutData starts the core nodes without -serve-data (the
	// default is with: clusters of core nodes only host data there), so
	// that they host no channel replicas.
	CoreWithoutData bool
	// DeadAfter is how long the meta leader waits before a node absent
	// from gossip is dead in the registry (0: the default, 5 minutes).
	DeadAfter time.Duration
	// StatsEvery is how often nodes measure their disk (0: 30 s).
	StatsEvery time.Duration
	// Faults installs a network fault hook in every node's cluster
	// transport and a logstore.SlowFS under every node's Raft log store, for
	// Partition, Isolate, Delay, SlowDisk and Heal (faults.go).
	Faults bool
}

// FastRaft are channel-group timings that make failover tests quick.
func FastRaft() shard.RaftTiming {
	return shard.RaftTiming{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
	}
}

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	opts  Options
	Nodes []*Node
	key   []byte
	// GossipKey is the nodes' first gossip key (a node restarted later
	// keeps the keyring in its data dir instead).
	GossipKey []byte
	log       hclog.Logger
	caDir     string // the cluster CA (ca.pem, ca-key.pem); "" when Insecure
}

// Node is one node of the test cluster; it keeps its ports and data dir
// across restarts.
type Node struct {
	Name        string
	Role        string
	Dir         string
	httpPort    int
	gossipPort  int
	clusterPort int
	bootstrap   int
	join        []string
	faults      *transport.Faults // nil unless Options.Faults; kept across restarts
	disk        *logstore.SlowFS  // likewise
	// certFile and keyFile are the node's TLS certificate and key, beside
	// its data dir so that a test wiping the data dir keeps them; "" when
	// Insecure.
	certFile, keyFile string

	mu    sync.Mutex
	agent *agent.Agent
	certs *transport.Certs // the running agent's, for Reload
}

// New starts a cluster and waits until every node is registered alive.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Core < 1 {
		opts.Core = 1
	}
	if opts.ChannelRaft == (shard.RaftTiming{}) {
		opts.ChannelRaft = FastRaft()
	}
	level := opts.LogLevel
	if env := os.Getenv("SHARDNET_TEST_LOG"); env != "" {
		level = env
	}
	if level == "" {
		level = "warn"
	}
	w := &testWriter{t: t, all: os.Getenv("SHARDNET_TEST_LOG") != ""}
	t.Cleanup(w.close)
	c := &Cluster{t: t, opts: opts, key: []byte("test-cluster-key"), GossipKey: []byte("test-gossip-key-32-bytes-of-aes!"),
		log: hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.LevelFromString(level), Output: w})}
	dir := t.TempDir()
	if !opts.Insecure {
		c.caDir = filepath.Join(dir, "ca")
		if err := transport.WriteCA(c.caDir, "testcluster CA", transport.KeyECDSA, 0, false); err != nil {
			t.Fatalf("testcluster: %v", err)
		}
	}
	for i := 0; i < opts.Core+opts.Resource; i++ {
		role, name := fsm.RoleCore, fmt.Sprintf("core%d", i+1)
		if i >= opts.Core {
			role, name = fsm.RoleResource, fmt.Sprintf("res%d", i-opts.Core+1)
		}
		nd := &Node{Name: name, Role: role, Dir: filepath.Join(dir, name),
			httpPort: FreePort(t), gossipPort: FreePort(t), clusterPort: FreePort(t)}
		if role == fsm.RoleCore {
			nd.bootstrap = opts.Core
		}
		if !opts.Insecure {
			var err error
			nd.certFile, nd.keyFile, err = transport.WriteNodeCert(c.caDir, filepath.Join(dir, "tls", name),
				transport.NodeCertOptions{Node: name, Role: role, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, false)
			if err != nil {
				t.Fatalf("testcluster: %v", err)
			}
		}
		if opts.Faults {
			nd.faults = transport.NewFaults()
			nd.disk = logstore.NewSlowFS()
		}
		c.Nodes = append(c.Nodes, nd)
	}
	// Every node joins every other, so any one restarting alone still finds
	// the cluster.
	for i, nd := range c.Nodes {
		for j, other := range c.Nodes {
			if j != i {
				nd.join = append(nd.join, net.JoinHostPort("127.0.0.1", strconv.Itoa(other.gossipPort)))
			}
		}
	}
	for _, nd := range c.Nodes {
		if err := c.start(nd); err != nil {
			c.Close()
			t.Fatalf("start %s: %v", nd.Name, err)
		}
	}
	t.Cleanup(c.Close)
	c.WaitFor(60*time.Second, func() error { return c.allRegistered() })
	return c
}

func (c *Cluster) start(nd *Node) error {
	cfg := cluster.Config{
		Name: nd.Name, Role: nd.Role, DataDir: nd.Dir, BindAddr: "127.0.0.1",
		GossipPort: nd.gossipPort, ClusterPort: nd.clusterPort,
		BootstrapExpect: nd.bootstrap, Join: nd.join,
		ClusterKey: c.key, GossipKey: c.GossipKey, LocalGossip: true, ChannelRaft: c.opts.ChannelRaft, MetaRaft: c.opts.MetaRaft,
		Logger: c.log.Named(nd.Name), Faults: nd.faults, MaxInFlight: c.opts.MaxInFlight, LeaderRebalance: c.opts.LeaderRebalance,
		HashCheckInterval: c.opts.HashCheckInterval,
		ChunkGCInterval:   c.opts.ChunkGCInterval, ChunkGCGrace: c.opts.ChunkGCGrace,
		ServeData: !c.opts.CoreWithoutData, DeadAfter: c.opts.DeadAfter, StatsEvery: c.opts.StatsEvery,
	}
	var certs *transport.Certs
	if nd.certFile != "" {
		var err error
		if certs, err = transport.LoadCerts(nd.certFile, nd.keyFile, filepath.Join(c.caDir, transport.CACertFile)); err != nil {
			return err
		}
		cfg.TLS = certs
	}
	if nd.disk != nil {
		// Not in the literal: a nil *SlowFS in the interface would be non-nil.
		cfg.LogFS = nd.disk
	}
	a, err := agent.Start(agent.Options{Cluster: cfg, HTTPBind: net.JoinHostPort("127.0.0.1", strconv.Itoa(nd.httpPort)), Token: c.opts.Token, HTTP: c.opts.HTTP})
	if err != nil {
		return err
	}
	nd.mu.Lock()
	nd.agent = a
	nd.certs = certs
	nd.mu.Unlock()
	return nil
}

// CADir is the cluster CA's directory (ca.pem, ca-key.pem), "" when
// Options.Insecure: tests make certificates of their own with it.
func (c *Cluster) CADir() string { return c.caDir }

// CertFiles returns the node's certificate and key files ("" when
// Options.Insecure); a test may replace them, then call ReloadCerts.
func (nd *Node) CertFiles() (certFile, keyFile string) { return nd.certFile, nd.keyFile }

// ReloadCerts makes the running node reread its certificate files, as
// SIGHUP does for an agent.
func (nd *Node) ReloadCerts() error {
	nd.mu.Lock()
	certs := nd.certs
	nd.mu.Unlock()
	if certs == nil {
		return fmt.Errorf("testcluster: %s runs without TLS or is stopped", nd.Name)
	}
	return certs.Reload()
}

func (c *Cluster) allRegistered() error {
	for _, nd := range c.Nodes {
		a := nd.Agent()
		if a == nil {
			continue
		}
		if err := a.Node.Ready(context.Background()); err != nil {
			return fmt.Errorf("%s: %w", nd.Name, err)
		}
		nodes, _ := a.Node.Nodes(context.Background())
		alive := 0
		for _, n := range nodes {
			if n.State == fsm.NodeAlive {
				alive++
			}
		}
		if alive < c.running() {
			return fmt.Errorf("%s sees %d alive nodes, want %d", nd.Name, alive, c.running())
		}
	}
	return nil
}

func (c *Cluster) running() int {
	n := 0
	for _, nd := range c.Nodes {
		if nd.Agent() != nil {
			n++
		}
	}
	return n
}

// ClusterKey is the key the nodes prove to each other on the cluster port
// (for a test that starts a node of its own beside them).
func (c *Cluster) ClusterKey() []byte { return c.key }

// Agent returns the node's running agent, or nil while it is stopped.
func (nd *Node) Agent() *agent.Agent {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.agent
}

// URL is the node's HTTP API base URL (stable across restarts).
func (nd *Node) URL() string { return "http://127.0.0.1:" + strconv.Itoa(nd.httpPort) }

// Client returns an API client for node i.
func (c *Cluster) Client(i int) *api.Client {
	return api.NewClient(c.Nodes[i].URL(), c.opts.Token, nil)
}

// Node returns the test node named name.
func (c *Cluster) Node(name string) *Node {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// Index returns the position of the node named name.
func (c *Cluster) Index(name string) int {
	for i, nd := range c.Nodes {
		if nd.Name == name {
			return i
		}
	}
	c.t.Fatalf("no node %q", name)
	return -1
}

// Kill stops node i as a crash would.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	if a := c.Nodes[i].take(); a != nil {
		if err := a.Kill(); err != nil {
			c.t.Logf("kill %s: %v", c.Nodes[i].Name, err)
		}
	}
}

// Stop shuts node i down gracefully.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if a := c.Nodes[i].take(); a != nil {
		if err := a.Close(); err != nil {
			c.t.Logf("stop %s: %v", c.Nodes[i].Name, err)
		}
	}
}

// take marks the node stopped and returns the agent it ran, if any.
func (nd *Node) take() *agent.Agent {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	a := nd.agent
	nd.agent = nil
	return a
}

// Start starts a stopped node i again from its data dir and ports.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	var err error
	// A port of the killed node may linger briefly in the kernel.
	c.WaitFor(20*time.Second, func() error { err = c.start(nd); return err })
}

// Close stops every node.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Add(1)
		go func(i int) { defer wg.Done(); c.Stop(i) }(i)
	}
	wg.Wait()
}

// CreateChannel creates a channel through node 0 and waits until it has a
// leader.
func (c *Cluster) CreateChannel(name string, replicas int) api.Channel {
	c.t.Helper()
	ctx := context.Background()
	var ch api.Channel
	c.WaitFor(30*time.Second, func() error {
		var err error
		ch, err = c.Client(c.anyRunning()).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: replicas})
		if api.IsConflict(err) {
			ch, err = c.Client(c.anyRunning()).Channel(ctx, name)
		}
		return err
	})
	c.WaitLeader(name)
	return ch
}

// WaitLeader waits until the channel reports a leader and returns its
// node name.
func (c *Cluster) WaitLeader(name string) string {
	c.t.Helper()
	var leader string
	c.WaitFor(30*time.Second, func() error {
		ch, err := c.Client(c.anyRunning()).Channel(context.Background(), name)
		if err != nil {
			return err
		}
		if ch.Leader == "" {
			return fmt.Errorf("channel %s has no leader yet", name)
		}
		for _, nd := range c.Nodes {
			if nd.Name == ch.Leader && nd.Agent() == nil {
				return fmt.Errorf("channel %s: leader %s is stopped", name, ch.Leader)
			}
		}
		leader = ch.Leader
		return nil
	})
	return leader
}

func (c *Cluster) anyRunning() int {
	for i, nd := range c.Nodes {
		if nd.Agent() != nil {
			return i
		}
	}
	c.t.Fatalf("no node is running")
	return -1
}

// WaitFor polls cond until it returns nil or the deadline (scaled for slow
// CI machines by SHARDNET_TEST_TIMEOUT_SCALE) passes, then fails the test
// with cond's last error.
func (c *Cluster) WaitFor(timeout time.Duration, cond func() error) {
	c.t.Helper()
	WaitFor(c.t, timeout, cond)
}

// Scaled stretches a test's deadline by SHARDNET_TEST_TIMEOUT_SCALE (slow,
// shared CI machines).
func Scaled(d time.Duration) time.Duration {
	if s, err := strconv.ParseFloat(os.Getenv("SHARDNET_TEST_TIMEOUT_SCALE"), 64); err == nil && s > 0 {
		return time.Duration(float64(d) * s)
	}
	return d
}

// WaitFor polls cond until it returns nil or the scaled deadline passes.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	timeout = Scaled(timeout)
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(wait)
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}

// nextPort hands out ports below Linux's ephemeral range (32768+), so a
// port chosen for a node cannot be taken meanwhile by an outgoing
// connection; each test process starts at its own offset.
var nextPort atomic.Int64

func init() { nextPort.Store(int64(20000 + (os.Getpid()*97)%10000)) }

// FreePort returns a loopback port free for TCP and UDP, below the
// ephemeral range; tests that start processes of their own use it too, so
// ports never collide within one test process.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := int(nextPort.Add(1))
		if port >= 32000 {
			nextPort.Store(20000)
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		// memberlist also needs the UDP port.
		if u, err := net.ListenPacket("udp", addr); err == nil {
			u.Close()
			return port
		}
	}
	t.Fatalf("no free port")
	return 0
}

// testWriter writes the nodes' logs through t.Log (printed when the test
// fails). Unless SHARDNET_TEST_LOG is set (all), it leaves out raft's
// routine warnings about a peer it cannot reach: a test that kills or
// cuts off a node makes hundreds of them a second, and a failure's own
// message, printed among them, was lost when CI showed only the head and
// tail of a long output.
type testWriter struct {
	t       testing.TB
	all     bool
	closed  atomic.Bool
	dropped atomic.Int64
}

// peerNoise are the raft warnings testWriter leaves out.
var peerNoise = []string{
	"failed to heartbeat to",
	"failed to appendEntries to",
	"failed to pipeline appendEntries",
	"failed to make requestVote RPC",
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.closed.Load() {
		return len(p), nil
	}
	if !w.all {
		for _, s := range peerNoise {
			if bytes.Contains(p, []byte(s)) {
				w.dropped.Add(1)
				return len(p), nil
			}
		}
	}
	w.t.Log(string(p))
	return len(p), nil
}

// close ends the logging at the test's end and says what was left out.
func (w *testWriter) close() {
	w.closed.Store(true)
	if n := w.dropped.Load(); n > 0 && w.t.Failed() {
		w.t.Logf("testcluster: %d warnings of raft about unreachable peers left out (SHARDNET_TEST_LOG=warn shows them)", n)
	}
}
