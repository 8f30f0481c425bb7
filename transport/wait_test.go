package transport

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// deadAddr returns a loopback address nobody listens on (until a test
// starts a node there).
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// appendReq is an AppendEntries that is not a heartbeat: it carries an entry
// and the commit index.
func appendReq() *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte("x")},
		Term:              2,
		PrevLogEntry:      1,
		PrevLogTerm:       1,
		LeaderCommitIndex: 1,
		Entries:           []*raft.Log{{Index: 2, Term: 2, Data: []byte("e")}},
	}
}

// replicationRPCs starts, each on its own goroutine, the three RPCs that
// wait for an unreachable peer: AppendEntries, InstallSnapshot and opening
// a pipeline (which then sends one AppendEntries). Each sends its result on
// the returned channel.
func replicationRPCs(g *GroupTransport, target string) map[string]chan error {
	addr := raft.ServerAddress(target)
	rpcs := map[string]chan error{
		"append_entries":   make(chan error, 1),
		"install_snapshot": make(chan error, 1),
		"pipeline":         make(chan error, 1),
	}
	go func() {
		rpcs["append_entries"] <- g.AppendEntries("b", addr, appendReq(), new(raft.AppendEntriesResponse))
	}()
	go func() {
		const size = 64 << 10
		req := &raft.InstallSnapshotRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 2, Size: size}
		rpcs["install_snapshot"] <- g.InstallSnapshot("b", addr, req, new(raft.InstallSnapshotResponse), newPattern(size))
	}()
	go func() {
		p, err := g.AppendEntriesPipeline("b", addr)
		if err != nil {
			rpcs["pipeline"] <- err
			return
		}
		defer p.Close()
		f, err := p.AppendEntries(appendReq(), new(raft.AppendEntriesResponse))
		if err == nil {
			err = f.Error()
		}
		rpcs["pipeline"] <- err
	}()
	return rpcs
}

// waiters reports how many callers wait for the peer at addr.
func (n *Node) waiters(addr string) int {
	p, err := n.peer(addr)
	if err != nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiters
}

// lastDialFailure reports when the last dial to addr failed.
func (n *Node) lastDialFailure(addr string) time.Time {
	p, err := n.peer(addr)
	if err != nil {
		return time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErrAt
}

// The RPCs that carry replication wait for a peer that is down and complete
// as soon as it answers again; heartbeats, votes and TimeoutNow to the same
// peer still fail at once.
func TestReplicationWaitsForUnreachablePeer(t *testing.T) {
	a := newTestNode(t, "k")
	target := deadAddr(t)
	ga, _ := a.Group(1)
	rpcs := replicationRPCs(ga, target)
	waitFor(t, 5*time.Second, "the replication RPCs to wait", func() bool { return a.waiters(target) == len(rpcs) })

	fast := []struct {
		name string
		call func() error
	}{
		{"heartbeat", func() error {
			return ga.AppendEntries("b", raft.ServerAddress(target), heartbeatReq(2), new(raft.AppendEntriesResponse))
		}},
		{"request_vote", func() error {
			return ga.RequestVote("b", raft.ServerAddress(target), &raft.RequestVoteRequest{Term: 3}, new(raft.RequestVoteResponse))
		}},
		{"request_pre_vote", func() error {
			return ga.RequestPreVote("b", raft.ServerAddress(target), &raft.RequestPreVoteRequest{Term: 3}, new(raft.RequestPreVoteResponse))
		}},
		{"timeout_now", func() error {
			return ga.TimeoutNow("b", raft.ServerAddress(target), &raft.TimeoutNowRequest{}, new(raft.TimeoutNowResponse))
		}},
	}
	for _, tc := range fast {
		start := time.Now()
		err := tc.call()
		if err == nil {
			t.Fatalf("%s to a down peer succeeded", tc.name)
		}
		// A refused dial on loopback takes microseconds; a wait would take
		// the whole RPC timeout (10 s).
		if took := time.Since(start); took > scaled(time.Second) {
			t.Errorf("%s to a down peer failed after %v, want at once", tc.name, took)
		}
	}
	// They outlive re-dials that fail.
	failedAt := a.lastDialFailure(target)
	waitFor(t, 5*time.Second, "another failed dial", func() bool { return a.lastDialFailure(target).After(failedAt) })
	for name, ch := range rpcs {
		select {
		case err := <-ch:
			t.Fatalf("%s returned while the peer is down: %v", name, err)
		default:
		}
	}

	// The peer comes back on the same address.
	b := newTestNode(t, "k", func(c *Config) { c.BindAddr = target })
	gb, _ := b.Group(1)
	serve(t, gb, echoHandler)
	back := time.Now()
	for name, ch := range rpcs {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s after the peer came back: %v", name, err)
			}
		case <-time.After(scaled(5 * time.Second)):
			t.Fatalf("%s still waiting %v after the peer came back", name, time.Since(back))
		}
	}
	t.Logf("replication RPCs completed %v after the peer came back", time.Since(back).Round(time.Millisecond))
	if w := a.waiters(target); w != 0 {
		t.Errorf("%d waiters left", w)
	}
}

// A wait ends after Config.ReplicationWait with the dial's error; a
// negative ReplicationWait fails at once, as before waits existed.
func TestReplicationWaitBound(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wait     time.Duration
		min, max time.Duration
	}{
		{"bounded", 700 * time.Millisecond, 700 * time.Millisecond, scaled(5 * time.Second)},
		{"disabled", -1, 0, scaled(time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestNode(t, "k", func(c *Config) { c.ReplicationWait = tc.wait })
			target := deadAddr(t)
			ga, _ := a.Group(1)
			start := time.Now()
			err := ga.AppendEntries("b", raft.ServerAddress(target), appendReq(), new(raft.AppendEntriesResponse))
			took := time.Since(start)
			if err == nil {
				t.Fatal("AppendEntries to a down peer succeeded")
			}
			if took < tc.min || took > tc.max {
				t.Errorf("failed after %v, want between %v and %v: %v", took, tc.min, tc.max, err)
			}
			var op *net.OpError
			if !errors.As(err, &op) {
				t.Errorf("error %q does not carry the dial error", err)
			}
			if tc.wait > 0 && !strings.Contains(err.Error(), "unreachable for") {
				t.Errorf("error %q does not say how long it waited", err)
			}
		})
	}
}

// Closing the group, or the node, ends its waits at once; nothing is left
// running.
func TestReplicationWaitEndsOnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		a := newTestNode(t, "k", func(c *Config) { c.RPCTimeout = time.Minute })
		target := deadAddr(t)
		g1, _ := a.Group(1)
		g2, _ := a.Group(2)
		rpcs1 := replicationRPCs(g1, target)
		rpcs2 := replicationRPCs(g2, target)
		waitFor(t, 5*time.Second, "the replication RPCs to wait", func() bool { return a.waiters(target) == len(rpcs1)+len(rpcs2) })
		expectClosed := func(rpcs map[string]chan error, what string) {
			t.Helper()
			for name, ch := range rpcs {
				select {
				case err := <-ch:
					if !errors.Is(err, ErrClosed) {
						t.Errorf("%s after %s: %v, want ErrClosed", name, what, err)
					}
				case <-time.After(scaled(2 * time.Second)):
					t.Fatalf("%s still waiting after %s", name, what)
				}
			}
		}
		_ = g1.Close()
		expectClosed(rpcs1, "GroupTransport.Close")
		if w := a.waiters(target); w != len(rpcs2) {
			t.Fatalf("%d waiters after closing group 1, want group 2's %d", w, len(rpcs2))
		}

		closed := make(chan error, 1)
		go func() { closed <- a.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(scaled(5 * time.Second)):
			t.Fatal("Node.Close hung on waiting RPCs")
		}
		expectClosed(rpcs2, "Node.Close")
	}()
	waitFor(t, 10*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// A peer blocked by Faults is unreachable like a down one: replication
// waits through the partition and resumes when it heals, while heartbeats
// fail at once with ErrBlocked.
func TestReplicationWaitsThroughBlock(t *testing.T) {
	fa := NewFaults()
	a := newTestNode(t, "k", func(c *Config) { c.Faults = fa })
	b := newTestNode(t, "k")
	target := string(b.Addr())
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	serve(t, gb, echoHandler)
	if err := ga.AppendEntries("b", b.Addr(), appendReq(), new(raft.AppendEntriesResponse)); err != nil {
		t.Fatalf("before the block: %v", err)
	}

	fa.Block(target)
	rpcs := replicationRPCs(ga, target)
	waitFor(t, 5*time.Second, "the replication RPCs to wait", func() bool { return a.waiters(target) == len(rpcs) })
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(2), new(raft.AppendEntriesResponse)); !errors.Is(err, ErrBlocked) {
		t.Fatalf("heartbeat to a blocked peer: %v, want ErrBlocked at once", err)
	}
	fa.Unblock(target)
	for name, ch := range rpcs {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s after Unblock: %v", name, err)
			}
		case <-time.After(scaled(5 * time.Second)):
			t.Fatalf("%s still waiting after Unblock", name)
		}
	}
}

// At most maxWaiters RPCs wait for one peer; beyond, they fail at once.
func TestReplicationWaitersBounded(t *testing.T) {
	a := newTestNode(t, "k")
	a.maxWaiters = 2
	target := deadAddr(t)
	ga, _ := a.Group(1)
	results := make(chan error, 2)
	for range 2 {
		go func() {
			results <- ga.AppendEntries("b", raft.ServerAddress(target), appendReq(), new(raft.AppendEntriesResponse))
		}()
	}
	waitFor(t, 5*time.Second, "two RPCs to wait", func() bool { return a.waiters(target) == 2 })
	start := time.Now()
	if err := ga.AppendEntries("b", raft.ServerAddress(target), appendReq(), new(raft.AppendEntriesResponse)); err == nil {
		t.Fatal("third AppendEntries to a down peer succeeded")
	}
	if took := time.Since(start); took > scaled(time.Second) {
		t.Errorf("third AppendEntries failed after %v, want at once", took)
	}
	_ = ga.Close()
	for range 2 {
		if err := <-results; !errors.Is(err, ErrClosed) {
			t.Errorf("waiting AppendEntries after Close: %v, want ErrClosed", err)
		}
	}
}

func TestReplicationWaitDefault(t *testing.T) {
	for _, tc := range []struct {
		name            string
		rpc, wait, want time.Duration
	}{
		{"default", 0, 0, defaultRPCTimeout},
		{"follows RPCTimeout", 3 * time.Second, 0, 3 * time.Second},
		{"explicit", 3 * time.Second, time.Minute, time.Minute},
		{"disabled", 0, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, "k", func(c *Config) { c.RPCTimeout, c.ReplicationWait = tc.rpc, tc.wait })
			if got := n.replicationWait(); got != tc.want {
				t.Errorf("replication wait %v, want %v", got, tc.want)
			}
		})
	}
}

// A peer whose host refuses connections (its process is gone) is reported
// down at the next probe, without waiting out the silence limit.
func TestProbeRefusedIsDownAtOnce(t *testing.T) {
	down := make(chan string, 4)
	a, err := New(Config{BindAddr: "127.0.0.1:0", ClusterKey: []byte("k"), OnPeerDown: func(addr string) { down <- addr }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{BindAddr: "127.0.0.1:0", ClusterKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	addr := string(b.Addr())
	deadline := time.Now().Add(10 * time.Second)
	for !a.PeerHealthy(addr) {
		if time.Now().After(deadline) {
			t.Fatal("peer never healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Close()
	select {
	case got := <-down:
		if got != addr {
			t.Fatalf("down: %s, want %s", got, addr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a refused peer was never reported down")
	}
	if a.PeerHealthy(addr) {
		t.Fatal("a peer reported down is still healthy")
	}
}
