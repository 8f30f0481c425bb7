package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// listFSM records the data of every applied entry in order.
type listFSM struct {
	mu       sync.Mutex
	entries  []string
	restores int
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	f.entries = append(f.entries, string(l.Data))
	f.mu.Unlock()
	return nil
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &listSnapshot{entries: slices.Clone(f.entries)}, nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var entries []string
	if err := json.NewDecoder(rc).Decode(&entries); err != nil {
		return err
	}
	f.mu.Lock()
	f.entries = entries
	f.restores++
	f.mu.Unlock()
	return nil
}

func (f *listFSM) state() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries), f.restores
}

type listSnapshot struct{ entries []string }

func (s *listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.entries); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *listSnapshot) Release() {}

// replica is one group member on one node.
type replica struct {
	id     raft.ServerID
	gid    uint64
	node   *testNode
	raft   *raft.Raft
	trans  *GroupTransport
	fsm    *listFSM
	logs   *raft.InmemStore
	stable *raft.InmemStore
	snaps  *raft.InmemSnapshotStore
}

// testRaftConfig: timers short enough for quick elections, long enough not
// to flap on a loaded 2-core machine under -race; a quiet logger.
func testRaftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.Logger = testLogger("raft-" + string(id))
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
	return c
}

// start (re)starts the replica's Raft on its node with its stores; a fresh
// FSM each time, as after a process restart.
func (r *replica) start(t testing.TB, tweak func(*raft.Config)) {
	t.Helper()
	trans, err := r.node.Group(r.gid)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testRaftConfig(r.id)
	if tweak != nil {
		tweak(cfg)
	}
	r.fsm = &listFSM{}
	r.trans = trans
	r.raft, err = raft.NewRaft(cfg, r.fsm, r.logs, r.stable, r.snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
}

// stop closes the replica's transport, then shuts its Raft down: Shutdown
// waits for Raft's replication goroutines, which may be waiting for an
// unreachable peer until the transport closes (doc.go).
func (r *replica) stop() {
	if r.raft != nil {
		_ = r.trans.Close()
		_ = r.raft.Shutdown().Error()
		r.raft = nil
	}
}

type raftCluster struct {
	t      testing.TB
	nodes  []*testNode
	groups map[uint64][]*replica // replica i lives on nodes[i]
	tweak  func(*raft.Config)
}

// newRaftCluster starts nodes and one replica of every group on each node,
// and bootstraps every group with all of them as voters.
func newRaftCluster(t testing.TB, nodes int, gids []uint64, tweak func(*raft.Config)) *raftCluster {
	return newRaftClusterTLS(t, nodes, gids, tweak, false)
}

// newRaftClusterTLS is newRaftCluster whose nodes speak mutual TLS when
// withTLS, each with a certificate naming its replicas' server id (n0, n1…).
func newRaftClusterTLS(t testing.TB, nodes int, gids []uint64, tweak func(*raft.Config), withTLS bool) *raftCluster {
	c := &raftCluster{t: t, groups: map[uint64][]*replica{}, tweak: tweak}
	var ca *testCA
	if withTLS {
		ca = newTestCA(t)
	}
	for i := range nodes {
		if withTLS {
			c.nodes = append(c.nodes, newTLSNode(t, ca.certs(t, fmt.Sprintf("n%d", i))))
			continue
		}
		c.nodes = append(c.nodes, newTestNode(t, "cluster-key"))
	}
	for _, gid := range gids {
		var cfg raft.Configuration
		for i, n := range c.nodes {
			r := &replica{
				id: raft.ServerID(fmt.Sprintf("n%d", i)), gid: gid, node: n,
				logs: raft.NewInmemStore(), stable: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore(),
			}
			c.groups[gid] = append(c.groups[gid], r)
			cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: r.id, Address: n.Addr()})
		}
		for _, r := range c.groups[gid] {
			r.start(t, tweak)
			if err := r.raft.BootstrapCluster(cfg).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Registered after the nodes' cleanups, so it runs before them.
	t.Cleanup(c.shutdown)
	return c
}

// shutdown stops every replica, in parallel (each Shutdown waits for its
// group's goroutines).
func (c *raftCluster) shutdown() {
	var wg sync.WaitGroup
	for _, reps := range c.groups {
		for _, r := range reps {
			wg.Go(r.stop)
		}
	}
	wg.Wait()
}

func (c *raftCluster) leader(gid uint64) *replica {
	for _, r := range c.groups[gid] {
		if r.raft != nil && r.raft.State() == raft.Leader {
			return r
		}
	}
	return nil
}

func (c *raftCluster) waitLeaders(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "every group to elect a leader", func() bool {
		for gid := range c.groups {
			if c.leader(gid) == nil {
				return false
			}
		}
		return true
	})
}

// apply commits data to group gid, following leadership changes.
func (c *raftCluster) apply(gid uint64, data string) error {
	deadline := time.Now().Add(scaled(20 * time.Second))
	for {
		var err error
		if l := c.leader(gid); l != nil {
			err = l.raft.Apply([]byte(data), 5*time.Second).Error()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apply %q to group %d: %v", data, gid, err)
		}
		if err != nil && !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) &&
			!errors.Is(err, raft.ErrEnqueueTimeout) && !errors.Is(err, raft.ErrRaftShutdown) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// applyAll applies n entries "gid/prefix/i" to every group, the groups
// concurrently.
func (c *raftCluster) applyAll(prefix string, n int) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.groups))
	for gid := range c.groups {
		wg.Go(func() {
			for i := range n {
				if err := c.apply(gid, fmt.Sprintf("%d/%s/%d", gid, prefix, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
}

// waitConverged waits until every running replica of every group holds the
// same entries as the group's leader, at least minEntries of them.
func (c *raftCluster) waitConverged(minEntries int, timeout time.Duration) {
	c.t.Helper()
	var why string
	deadline := time.Now().Add(scaled(timeout))
	for {
		why = c.divergence(minEntries)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("FSMs did not converge: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *raftCluster) divergence(minEntries int) string {
	for gid, reps := range c.groups {
		l := c.leader(gid)
		if l == nil {
			return fmt.Sprintf("group %d has no leader", gid)
		}
		want, _ := l.fsm.state()
		if len(want) < minEntries {
			return fmt.Sprintf("group %d leader has %d entries, want >= %d", gid, len(want), minEntries)
		}
		for _, r := range reps {
			if r.raft == nil {
				continue
			}
			if got, _ := r.fsm.state(); !slices.Equal(got, want) {
				return fmt.Sprintf("group %d replica %s has %d entries, leader %d", gid, r.id, len(got), len(want))
			}
		}
	}
	return ""
}

func TestRaftManyGroups(t *testing.T) {
	const groups = 50
	gids := make([]uint64, groups)
	for i := range gids {
		gids[i] = uint64(1000 + i)
	}
	c := newRaftCluster(t, 3, gids, nil)
	c.waitLeaders(30 * time.Second)
	c.applyAll("e", 20)
	c.waitConverged(20, 30*time.Second)
	// All 150 replicas share one session per node pair and direction.
	for i, n := range c.nodes {
		if s := n.metric(t, "shardnet_transport_sessions"); s != 4 {
			t.Errorf("node %d has %v sessions, want 4 (2 peers × in and out)", i, s)
		}
	}
}

// A follower that misses entries the leader has compacted away catches up
// through InstallSnapshot over the transport.
func TestRaftInstallSnapshot(t *testing.T) {
	tweak := func(c *raft.Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 30 // snapshots only when the test asks
		c.SnapshotInterval = time.Hour
	}
	c := newRaftCluster(t, 3, []uint64{1}, tweak)
	c.waitLeaders(20 * time.Second)
	c.applyAll("before", 3)
	c.waitConverged(3, 20*time.Second)

	l := c.leader(1)
	var f *replica
	for _, r := range c.groups[1] {
		if r != l {
			f = r
			break
		}
	}
	f.stop()
	fLast, _ := f.logs.LastIndex()
	c.applyAll("missed", 40)
	l = c.leader(1)
	if err := l.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if first, _ := l.logs.FirstIndex(); first <= fLast+1 {
		t.Fatalf("leader log starts at %d, follower has up to %d: no snapshot needed", first, fLast)
	}

	f.start(t, tweak)
	c.applyAll("after", 2)
	c.waitConverged(45, 30*time.Second)
	if _, restores := f.fsm.state(); restores == 0 {
		t.Fatal("the follower caught up without restoring a snapshot")
	}
	if v := l.node.metric(t, "shardnet_transport_rpcs_sent_total"); v == 0 {
		t.Fatal("no RPCs counted")
	}
}

// Closing one group's transport (Raft shutdown) leaves the other groups on
// the same node working; closing the nodes afterwards leaks no goroutine.
func TestRaftGroupCloseThenNodeCloseLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		c := newRaftCluster(t, 3, []uint64{1, 2, 3}, nil)
		c.waitLeaders(20 * time.Second)
		c.applyAll("a", 3)
		// Stop group 1's replica on a node: its transport unregisters.
		r := c.groups[1][1]
		r.stop()
		if r.node.lookup(1) != nil {
			t.Fatal("group 1 still registered after its Raft shut down")
		}
		c.applyAll("b", 5)
		c.waitConverged(8, 20*time.Second)
		c.shutdown()
		for _, n := range c.nodes {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	deadline := time.Now().Add(scaled(10 * time.Second))
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node that restarts on the same address is reconnected to by its peers,
// and its replicas catch up.
func TestRaftNodeRestart(t *testing.T) {
	c := newRaftCluster(t, 3, []uint64{1, 2, 3, 4}, nil)
	c.waitLeaders(20 * time.Second)
	c.applyAll("a", 5)
	c.waitConverged(5, 20*time.Second)

	old := c.nodes[2]
	addr := string(old.Addr())
	for gid := range c.groups {
		c.groups[gid][2].stop()
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	c.waitLeaders(20 * time.Second) // groups led from node 2 elect again
	c.applyAll("b", 5)

	restarted := newTestNode(t, "cluster-key", func(cfg *Config) { cfg.BindAddr = addr })
	if string(restarted.Addr()) != addr {
		t.Fatalf("restarted on %s, want %s", restarted.Addr(), addr)
	}
	c.nodes[2] = restarted
	for gid := range c.groups {
		r := c.groups[gid][2]
		r.node = restarted
		r.start(t, nil)
	}
	c.applyAll("c", 5)
	c.waitConverged(15, 30*time.Second)
}

// A follower back after an outage long enough for Raft's replication
// backoff to reach its 10 s cap (TestWritesStallAfterLongFollowerOutage in
// internal/chaos) gets entries at once, not only heartbeats: when the other
// follower then stops, the leader and the returned follower commit within
// seconds. Failing fast on the down follower, the leader's replication
// goroutine would be asleep for up to 10 s (8.5 s measured here with the
// wait disabled); waiting in the transport keeps its failure count at
// about one. Stopping the leader afterwards, while its replication to the
// stopped follower waits, is prompt once its transport is closed first.
func TestRaftFollowerBackAfterLongOutage(t *testing.T) {
	c := newRaftCluster(t, 3, []uint64{1}, nil)
	c.waitLeaders(20 * time.Second)
	c.applyAll("a", 3)
	c.waitConverged(3, 20*time.Second)

	l := c.leader(1)
	var f *replica
	for _, r := range c.groups[1] {
		if r != l {
			f = r
			break
		}
	}
	fi := slices.Index(c.groups[1], f)
	addr := string(f.node.Addr())
	f.stop()
	if err := f.node.Close(); err != nil {
		t.Fatal(err)
	}
	// Long enough for 12 fail-fast failures (10 ms doubling adds up to
	// 10.24 s), while the leader keeps committing with the other follower.
	const outage = 12 * time.Second
	down := time.Now()
	for i := 0; time.Since(down) < outage; i++ {
		if err := c.apply(1, fmt.Sprintf("outage/%d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // pacing the writes, not waiting for a state
	}

	restarted := newTestNode(t, "cluster-key", func(cfg *Config) { cfg.BindAddr = addr })
	c.nodes[fi] = restarted
	f.node = restarted
	f.start(t, nil)
	l = c.leader(1)
	if l == nil || l == f {
		t.Fatalf("leader changed to %v during the outage", l)
	}
	// The follower hears the leader's heartbeats (their backoff is short)...
	waitFor(t, 10*time.Second, "the returned follower to know the leader", func() bool {
		addr, _ := f.raft.LeaderWithID()
		return addr == l.node.Addr()
	})
	// ...and with the other follower gone, every commit needs it.
	var g *replica
	for _, r := range c.groups[1] {
		if r != l && r != f {
			g = r
		}
	}
	g.stop()
	if err := g.node.Close(); err != nil { // unreachable now: the leader's replication to g waits
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.apply(1, "after"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("first commit with the leader and the follower back after %v: %v", outage, took.Round(time.Millisecond))
	// Not scaled: ~10 s is the bug; a loaded machine under -race takes well under a second.
	if took > 3*time.Second {
		t.Errorf("first commit after the follower came back took %v, want under 3 s", took.Round(time.Millisecond))
	}
	if c.leader(1) != l {
		t.Errorf("leadership moved: the commit did not come from the leader's replication to the returned follower")
	}

	// The leader's replication to g now waits for it; closing the leader's
	// transport ends the wait, so Shutdown returns at once.
	start = time.Now()
	l.stop()
	if took := time.Since(start); took > scaled(3*time.Second) {
		t.Errorf("stopping the leader took %v with a replication wait pending", took)
	}
}

// Parked pipelines (quiet.go): the pipelines of groups without writes
// close, their followers are then replicated by plain appends that stay
// off the wire while idle, a lone write still reaches every follower at
// once, and writes open the pipelines again.
func TestRaftParkedPipelines(t *testing.T) {
	old := pipelineIdle
	pipelineIdle = 300 * time.Millisecond
	t.Cleanup(func() { pipelineIdle = old })
	gids := []uint64{7, 8}
	c := newIdleCluster(t, gids)
	sum := c.metric
	// Two groups, two followers each: four pipelines, all parked.
	waitFor(t, 10*time.Second, "every pipeline parked", func() bool {
		return sum("shardnet_transport_pipelines") == 0 && sum("shardnet_transport_pipelines_parked_total") >= 4
	})
	q0, sent0 := sum("shardnet_transport_quiet_appends_total"), sum("shardnet_transport_rpcs_sent_total")
	time.Sleep(500 * time.Millisecond)
	if q := sum("shardnet_transport_quiet_appends_total") - q0; q < 10 {
		t.Fatalf("%v quiet plain appends in 500 ms of two parked groups at a 20 ms commit timeout, want many", q)
	}
	// What still crosses the wire is the heartbeats (every 50-100 ms per
	// follower) and the real append every quietRefresh: far fewer than
	// the 100-200 appends the commit timeout asks for.
	if sent := sum("shardnet_transport_rpcs_sent_total") - sent0; sent > 100 {
		t.Fatalf("%v RPCs sent in 500 ms of two parked groups, want the heartbeats only", sent)
	}
	c.loneWrites(gids, 3, "a parked group")
	// Steady writes open the pipelines again.
	reopened := false
	for i := 0; i < 100 && !reopened; i++ {
		for _, gid := range gids {
			if err := c.apply(gid, fmt.Sprintf("w%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		reopened = sum("shardnet_transport_pipelines") == 4
	}
	if !reopened {
		t.Fatalf("pipelines open under writes: %v, want 4", sum("shardnet_transport_pipelines"))
	}
	c.waitConverged(5, 20*time.Second)
}

// loneWrites makes rounds lone writes in each of gids, one round after the
// other, and fails unless every replica's state machine holds each within
// 2 s: the append that carries its commit index must go out even though
// the group is otherwise idle (what says how idle).
func (c *raftCluster) loneWrites(gids []uint64, rounds int, what string) {
	c.t.Helper()
	for round := range rounds {
		start := time.Now()
		for _, gid := range gids {
			if err := c.apply(gid, "lone"); err != nil {
				c.t.Fatal(err)
			}
		}
		deadline := start.Add(scaled(2 * time.Second))
		for _, gid := range gids {
			want, _ := c.leader(gid).fsm.state()
			for _, r := range c.groups[gid] {
				for {
					got, _ := r.fsm.state()
					if slices.Equal(got, want) {
						break
					}
					if time.Now().After(deadline) {
						c.t.Fatalf("round %d: group %d replica %s has %d entries %v after a lone write to %s, leader %d", round, gid, r.id, len(got), time.Since(start), what, len(want))
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		}
		time.Sleep(200 * time.Millisecond) // idle again
	}
}

// newIdleCluster starts 3 nodes with gids, each group with a 20 ms commit
// timeout (an empty append every 20-40 ms; heartbeats every 50-100 ms keep
// the followers' answers fresh), five writes in each, converged.
func newIdleCluster(t testing.TB, gids []uint64) *raftCluster {
	c := newRaftCluster(t, 3, gids, func(cfg *raft.Config) {
		cfg.CommitTimeout = 20 * time.Millisecond
	})
	c.waitLeaders(30 * time.Second)
	c.applyAll("a", 5)
	c.waitConverged(5, 20*time.Second)
	return c
}

// metric sums a metric over the cluster's nodes.
func (c *raftCluster) metric(name string) float64 {
	var s float64
	for _, n := range c.nodes {
		s += n.metric(c.t, name)
	}
	return s
}
