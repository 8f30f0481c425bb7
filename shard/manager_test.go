package shard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/transport"
)

type testNode struct {
	id     string
	dir    string
	trans  *transport.Node
	m      *Manager
	killed bool // stop does nothing
}

func fastTiming() RaftTiming {
	return RaftTiming{HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 20 * time.Millisecond}
}

func startNode(t *testing.T, id, dir, addr string) *testNode {
	t.Helper()
	return startNodeTimed(t, id, dir, addr, fastTiming())
}

func startNodeTimed(t *testing.T, id, dir, addr string, timing RaftTiming) *testNode {
	t.Helper()
	return startNodeFS(t, id, dir, addr, timing, nil)
}

// startNodeFS starts a node whose Raft log store uses logFS (nil: the OS's).
func startNodeFS(t *testing.T, id, dir, addr string, timing RaftTiming, logFS vfs.FS) *testNode {
	t.Helper()
	return startNodeWith(t, id, dir, addr, timing, logFS, nil)
}

// startNodeWith starts a node whose Raft log store uses logFS (nil: the
// OS's) and whose transport takes faults (nil: none).
func startNodeWith(t *testing.T, id, dir, addr string, timing RaftTiming, logFS vfs.FS, faults *transport.Faults) *testNode {
	t.Helper()
	tr, err := transport.New(transport.Config{BindAddr: addr, ClusterKey: []byte("k"), Logger: hclog.NewNullLogger(), Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(Config{DataDir: dir, NodeID: id, ServerID: ServerIDFor(id, "1"), Transport: tr, Raft: timing, LogFS: logFS})
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	if err := m.StartExisting(); err != nil {
		t.Fatal(err)
	}
	return &testNode{id: id, dir: dir, trans: tr, m: m}
}

func (n *testNode) stop(t *testing.T) {
	t.Helper()
	if n.killed {
		return
	}
	if err := n.m.Close(); err != nil {
		t.Errorf("close manager %s: %v", n.id, err)
	}
	n.trans.Close()
}

func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func put(t *testing.T, r *Replica, k, v string) *fsm.Result {
	t.Helper()
	cmd, err := fsm.Encode(&fsm.Put{Key: []byte(k), Value: []byte(v)})
	if err != nil {
		t.Fatal(err)
	}
	var res *fsm.Result
	waitFor(t, 10*time.Second, func() error {
		res, err = r.Propose(context.Background(), cmd)
		return err
	})
	return res
}

func TestReplicaLifecycle(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, "n1", dir, "127.0.0.1:0")
	addr := string(n.trans.Addr())
	peers := []raft.Server{{Suffrage: raft.Voter, ID: ServerIDFor("n1", "1"), Address: raft.ServerAddress(addr)}}
	r, err := n.m.Ensure(ReplicaSpec{GroupID: 7, Channel: "c", Peers: peers, MetaIndex: 3})
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := n.m.Ensure(ReplicaSpec{GroupID: 7, Channel: "c", Peers: peers}); again != r {
		t.Fatal("Ensure of a running replica must return it")
	}
	var last *fsm.Result
	for i := range 20 {
		last = put(t, r, fmt.Sprintf("k%d", i), "v")
	}
	if err := r.ReadBarrier(context.Background(), Linearizable); err != nil {
		t.Fatal(err)
	}
	if e, ok, _ := r.FSM().Get([]byte("k19")); !ok || e.ModifyIndex != last.Index {
		t.Fatalf("k19 = %+v %v, want modify index %d", e, ok, last.Index)
	}
	applied := r.FSM().Applied()
	n.stop(t)

	// Restart: the replica starts from disk without any spec, its FSM
	// already at the applied index (nothing re-applied from index 1).
	n = startNode(t, "n1", dir, addr)
	r, ok := n.m.Replica(7)
	if !ok {
		t.Fatal("replica not started from disk")
	}
	if got := r.FSM().Applied(); got != applied {
		t.Fatalf("applied after restart = %d, want %d", got, applied)
	}
	if mi, _ := n.m.MetaIndex(7); mi != 3 {
		t.Fatalf("meta index = %d", mi)
	}
	put(t, r, "after", "restart")

	if err := n.m.Remove(7); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.m.Replica(7); ok {
		t.Fatal("replica still running after Remove")
	}
	if _, err := os.Stat(filepath.Join(dir, "replicas", "7")); !os.IsNotExist(err) {
		t.Fatalf("replica dir still there: %v", err)
	}
	if groups, _ := n.m.logs.Groups(); len(groups) != 0 {
		t.Fatalf("log groups after remove: %v", groups)
	}
	// The group can be created again from scratch (fresh state).
	r, err = n.m.Ensure(ReplicaSpec{GroupID: 7, Channel: "c", Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		if r.Raft().State() != raft.Leader {
			return errors.New("no leader")
		}
		return nil
	})
	if _, ok, _ := r.FSM().Get([]byte("k1")); ok {
		t.Fatal("old data visible in a re-created group")
	}
	n.stop(t)
}

func TestBootCleansInterruptedRemovalAndOrphans(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, "n1", dir, "127.0.0.1:0")
	addr := string(n.trans.Addr())
	peers := []raft.Server{{Suffrage: raft.Voter, ID: ServerIDFor("n1", "1"), Address: raft.ServerAddress(addr)}}
	for _, gid := range []uint64{1, 2} {
		r, err := n.m.Ensure(ReplicaSpec{GroupID: gid, Channel: "c", Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		put(t, r, "k", "v")
	}
	n.stop(t)
	// A removal of group 1 that crashed after its tombstone, and a replica
	// dir that never got its record.
	if err := os.WriteFile(filepath.Join(dir, "replicas", "1", "REMOVING"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "replicas", "9"), 0o755); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, "n1", dir, addr)
	defer n.stop(t)
	if _, ok := n.m.Replica(1); ok {
		t.Fatal("group 1 started despite its tombstone")
	}
	if _, ok := n.m.Replica(2); !ok {
		t.Fatal("group 2 not started")
	}
	for _, gid := range []string{"1", "9"} {
		if _, err := os.Stat(filepath.Join(dir, "replicas", gid)); !os.IsNotExist(err) {
			t.Errorf("replicas/%s still there", gid)
		}
	}
	if groups, _ := n.m.logs.Groups(); len(groups) != 1 || groups[0] != 2 {
		t.Fatalf("log groups = %v, want [2]", groups)
	}
}

// startGroup starts three nodes, each with a replica of group gid, and
// waits for a leader; the nodes stop at the end of the test.
func startGroup(t *testing.T, gid uint64) (nodes []*testNode, reps []*Replica, leader int) {
	t.Helper()
	return startGroupTimed(t, gid, fastTiming())
}

func startGroupTimed(t *testing.T, gid uint64, timing RaftTiming) (nodes []*testNode, reps []*Replica, leader int) {
	t.Helper()
	return startGroupFS(t, gid, timing, nil)
}

func startGroupFS(t *testing.T, gid uint64, timing RaftTiming, logFS vfs.FS) (nodes []*testNode, reps []*Replica, leader int) {
	t.Helper()
	return startGroupWith(t, gid, timing, logFS, nil)
}

// startGroupWith is startGroupFS with faults[i] (if any) in node i's
// transport.
func startGroupWith(t *testing.T, gid uint64, timing RaftTiming, logFS vfs.FS, faults []*transport.Faults) (nodes []*testNode, reps []*Replica, leader int) {
	t.Helper()
	var peers []raft.Server
	for i := range 3 {
		var f *transport.Faults
		if i < len(faults) {
			f = faults[i]
		}
		n := startNodeWith(t, fmt.Sprintf("n%d", i+1), t.TempDir(), "127.0.0.1:0", timing, logFS, f)
		t.Cleanup(func() { n.stop(t) })
		nodes = append(nodes, n)
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: ServerIDFor(n.id, "1"), Address: n.trans.Addr()})
	}
	// The first peer stands at once when its replica starts
	// (electionAtStart): start it last, when the others can vote, as the
	// timers of the slow tests would not elect anyone within the wait.
	reps = make([]*Replica, len(nodes))
	for i := len(nodes) - 1; i >= 0; i-- {
		r, err := nodes[i].m.Ensure(ReplicaSpec{GroupID: gid, Channel: "c", Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = r
	}
	waitFor(t, 10*time.Second, func() error {
		for i, r := range reps {
			if r.Raft().State() == raft.Leader {
				leader = i
				return nil
			}
		}
		return errors.New("no leader")
	})
	return nodes, reps, leader
}

func TestFollowersRedirectToTheLeader(t *testing.T) {
	nodes, reps, leader := startGroup(t, 5)
	res := put(t, reps[leader], "k", "v")
	follower := reps[(leader+1)%3]
	cmd, _ := fsm.Encode(&fsm.Put{Key: []byte("x"), Value: []byte("y")})
	waitFor(t, 5*time.Second, func() error {
		_, err := follower.Propose(context.Background(), cmd)
		var re *RedirectError
		if !errors.As(err, &re) || !errors.Is(err, ErrNotLeader) {
			return fmt.Errorf("follower propose: %v", err)
		}
		if re.NodeID != nodes[leader].id || re.Addr != string(nodes[leader].trans.Addr()) {
			return fmt.Errorf("redirect to %s at %s, want %s", re.NodeID, re.Addr, nodes[leader].id)
		}
		return nil
	})
	if err := follower.ReadBarrier(context.Background(), Linearizable); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("linearizable read on a follower: %v", err)
	}
	if err := follower.ReadBarrier(context.Background(), Stale); err != nil {
		t.Fatalf("stale read on a follower: %v", err)
	}
	// The follower catches up; its info reports the leader and voters.
	waitFor(t, 10*time.Second, func() error {
		info := follower.Info()
		if info.Applied < res.Index || info.Leader != nodes[leader].id || len(info.Voters) != 3 {
			return fmt.Errorf("follower info %+v", info)
		}
		return nil
	})
}

func TestInFlightBounds(t *testing.T) {
	r := &Replica{m: &Manager{cfg: Config{MaxInFlight: 2, MaxInFlightBytes: 100}}}
	for i := range 2 {
		if !r.acquire(10) {
			t.Fatalf("proposal %d refused", i+1)
		}
	}
	if r.acquire(10) {
		t.Fatal("third proposal accepted beyond MaxInFlight")
	}
	r.release(10)
	if r.acquire(95) {
		t.Fatal("proposal accepted beyond MaxInFlightBytes")
	}
	if !r.acquire(50) {
		t.Fatal("proposal within bounds refused")
	}
	r.release(10)
	r.release(50)
	// One proposal larger than the byte bound alone still goes through:
	// the bound limits queueing, not the size of a single command.
	if !r.acquire(500) {
		t.Fatal("a lone large proposal refused")
	}
	if r.inflight.Load() != 1 || r.inflightBytes.Load() != 500 {
		t.Fatalf("counters = %d, %d", r.inflight.Load(), r.inflightBytes.Load())
	}
}

func TestServerIDs(t *testing.T) {
	id := ServerIDFor("node-a@b", "1f")
	if NodeOf(id) != "node-a@b" || NodeOf("plain") != "plain" {
		t.Fatalf("NodeOf(%q) = %q", id, NodeOf(id))
	}
}

func TestDiskGuardRefusesWrites(t *testing.T) {
	tr, err := transport.New(transport.Config{BindAddr: "127.0.0.1:0", ClusterKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// No disk has an exabyte free: every write is refused, reads are not.
	m, err := Open(Config{DataDir: t.TempDir(), NodeID: "n1", ServerID: ServerIDFor("n1", "1"), Transport: tr, Raft: fastTiming(), MinFreeDisk: 1 << 60})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Ensure(ReplicaSpec{GroupID: 1, Channel: "c", Peers: []raft.Server{{Suffrage: raft.Voter, ID: ServerIDFor("n1", "1"), Address: tr.Addr()}}})
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := fsm.Encode(&fsm.Put{Key: []byte("k"), Value: []byte("v")})
	waitFor(t, 10*time.Second, func() error {
		if r.Raft().State() != raft.Leader {
			return errors.New("no leader yet")
		}
		return nil
	})
	if _, err := r.Propose(context.Background(), cmd); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("propose on a full disk: %v", err)
	}
	if err := r.ReadBarrier(context.Background(), Linearizable); err != nil {
		t.Fatalf("reads must still work: %v", err)
	}
}

// When the prober reports a peer down, the groups it led get short timers
// (and only those), and get their normal timers back later.
func TestPeerDownShortensTimersOfGroupsLedFromThere(t *testing.T) {
	nodes, reps, leader := startGroup(t, 3)
	follower := reps[(leader+1)%3]
	waitFor(t, 10*time.Second, func() error {
		if addr, _ := follower.Raft().LeaderWithID(); addr != nodes[leader].trans.Addr() {
			return fmt.Errorf("follower sees leader %q", addr)
		}
		return nil
	})
	normal := follower.Raft().ReloadableConfig().HeartbeatTimeout
	nodes[(leader+1)%3].m.PeerDown("127.0.0.1:1") // not the leader: nothing changes
	if got := follower.Raft().ReloadableConfig().HeartbeatTimeout; got != normal {
		t.Fatalf("timers changed for a peer that leads nothing: %v", got)
	}
	nodes[(leader+1)%3].m.PeerDown(string(nodes[leader].trans.Addr()))
	if got := follower.Raft().ReloadableConfig().HeartbeatTimeout; got != fastTiming().LeaderLeaseTimeout {
		t.Fatalf("heartbeat timeout after PeerDown = %v, want %v", got, fastTiming().LeaderLeaseTimeout)
	}
	waitFor(t, 3*shortTimersFor, func() error {
		if got := follower.Raft().ReloadableConfig().HeartbeatTimeout; got != normal {
			return fmt.Errorf("timers still short: %v", got)
		}
		return nil
	})
}

// When the prober says a group's leader node is gone, its surviving voters
// stand in turn (lowest server id first) without waiting for any timeout:
// the timers here are far too long to elect by themselves within the test's
// wait. Run several times, so that the first to stand is sometimes the
// follower whose log is behind (its vote is refused, and the next stands).
func TestPeerDownElectsWithoutTimers(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) { peerDownElects(t) })
	}
}

func peerDownElects(t *testing.T) {
	slow := RaftTiming{HeartbeatTimeout: 30 * time.Second, ElectionTimeout: 30 * time.Second,
		LeaderLeaseTimeout: 10 * time.Second, CommitTimeout: 20 * time.Millisecond}
	nodes, reps, leader := startGroupTimed(t, 9, slow)
	for i := range 20 {
		put(t, reps[leader], fmt.Sprintf("before-%d", i), "v")
	}
	dead := string(nodes[leader].trans.Addr())
	for i, r := range reps {
		if i == leader {
			continue
		}
		waitFor(t, 10*time.Second, func() error {
			if addr, _ := r.Raft().LeaderWithID(); string(addr) != dead {
				return fmt.Errorf("replica %d sees leader %q", i, addr)
			}
			return nil
		})
	}
	if err := nodes[leader].m.Kill(); err != nil {
		t.Fatal(err)
	}
	nodes[leader].trans.Close()
	nodes[leader].killed = true
	for i := range nodes {
		if i != leader {
			nodes[i].m.PeerDown(dead)
		}
	}
	var next int
	waitFor(t, 5*time.Second, func() error {
		for i, r := range reps {
			if i != leader && r.Raft().State() == raft.Leader {
				next = i
				return nil
			}
		}
		var st []string
		for i, r := range reps {
			st = append(st, fmt.Sprintf("%d:%v/%v/%v", i, r.Raft().State(), testutil.ToFloat64(nodes[i].m.metrics.fastElections), r.Raft().CurrentTerm()))
		}
		return fmt.Errorf("no new leader: %v", st)
	})
	var stood float64
	for i := range nodes {
		if i != leader {
			stood += testutil.ToFloat64(nodes[i].m.metrics.fastElections)
		}
	}
	if stood < 1 {
		t.Fatal("a leader was elected but nobody stood: the timers did it")
	}
	put(t, reps[next], "after", "v")
	for i := range 20 {
		if e, found, err := reps[next].FSM().Get([]byte(fmt.Sprintf("before-%d", i))); err != nil || !found || string(e.Value) != "v" {
			t.Fatalf("new leader lost an acknowledged write: %v %v %q", err, found, e.Value)
		}
	}
}

// RaftTiming.Or fills exactly the zero fields.
func TestRaftTimingOr(t *testing.T) {
	d := DefaultRaftTiming()
	if got := (RaftTiming{}).Or(d); got != d {
		t.Fatalf("zero.Or(d) = %+v, want %+v", got, d)
	}
	full := RaftTiming{HeartbeatTimeout: 1, ElectionTimeout: 2, LeaderLeaseTimeout: 3, CommitTimeout: 4,
		MaxAppendEntries: 5, SnapshotInterval: 6, SnapshotThreshold: 7, TrailingLogs: 8}
	if got := full.Or(d); got != full {
		t.Fatalf("full.Or(d) = %+v, want it unchanged", got)
	}
}
