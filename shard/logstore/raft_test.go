package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// setFSM records the set of uint64 values applied, and how many command
// entries carried them. Its snapshot is the sorted set and the count.
type setFSM struct {
	mu     sync.Mutex
	values map[uint64]bool
	count  int
}

func newSetFSM() *setFSM { return &setFSM{values: map[uint64]bool{}} }

func (f *setFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) != 8 {
		return fmt.Errorf("unexpected entry %d type %v len %d", l.Index, l.Type, len(l.Data))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values[binary.BigEndian.Uint64(l.Data)] = true
	f.count++
	return nil
}

func (f *setFSM) state() (map[uint64]bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.values), f.count
}

func (f *setFSM) Snapshot() (raft.FSMSnapshot, error) {
	values, count := f.state()
	b := binary.BigEndian.AppendUint64(nil, uint64(count))
	for _, v := range slices.Sorted(maps.Keys(values)) {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return snapshotBytes(b), nil
}

func (f *setFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if len(b) < 8 || len(b)%8 != 0 {
		return fmt.Errorf("bad snapshot length %d", len(b))
	}
	values := map[uint64]bool{}
	for i := 8; i < len(b); i += 8 {
		values[binary.BigEndian.Uint64(b[i:])] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values, f.count = values, int(binary.BigEndian.Uint64(b))
	return nil
}

type snapshotBytes []byte

func (s snapshotBytes) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshotBytes) Release() {}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const raftGroup = 42

type raftNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	dir   string // the node's log store
	snaps raft.SnapshotStore
	db    *DB
	fsm   *setFSM
	trans *raft.InmemTransport
	r     *raft.Raft
}

func testRaftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.Logger = hclog.NewNullLogger()
	// Fast but not flappy timers for two shared cores under -race.
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 200 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	// Snapshot and compact often so the log sees prefix DeleteRanges.
	c.SnapshotThreshold = 64
	c.SnapshotInterval = 50 * time.Millisecond
	c.TrailingLogs = 32
	return c
}

// startNodes opens each node's DB (if closed), gives every node a fresh
// in-memory transport connected to the others, and starts raft on group
// raftGroup of its DB, wrapped in a LogCache as production does.
func startNodes(t *testing.T, nodes []*raftNode) {
	t.Helper()
	for _, n := range nodes {
		if n.db == nil {
			db, err := Open(n.dir, Options{MemTableSize: 4 << 20})
			if err != nil {
				t.Fatal(err)
			}
			n.db = db
		}
		_, n.trans = raft.NewInmemTransport(n.addr)
		n.fsm = newSetFSM()
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
	for _, n := range nodes {
		store := n.db.Group(raftGroup)
		cache, err := raft.NewLogCache(64, store)
		if err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(testRaftConfig(n.id), n.fsm, cache, store, n.snaps, n.trans)
		if err != nil {
			t.Fatalf("%s: NewRaft: %v", n.id, err)
		}
		n.r = r
	}
}

// stopNodes shuts raft down and closes the DBs, as a node restart would.
func stopNodes(t *testing.T, nodes []*raftNode) {
	t.Helper()
	for _, n := range nodes {
		if n.r != nil {
			if err := n.r.Shutdown().Error(); err != nil {
				t.Errorf("%s: Shutdown: %v", n.id, err)
			}
			n.r = nil
		}
		if n.db != nil {
			if err := n.db.Close(); err != nil {
				t.Errorf("%s: Close: %v", n.id, err)
			}
			n.db = nil
		}
	}
}

func leaderOf(nodes []*raftNode) *raftNode {
	for _, n := range nodes {
		if n.r.State() == raft.Leader {
			return n
		}
	}
	return nil
}

// applyAll makes every value committed, retrying values whose outcome a
// leadership change left unknown (the FSM is a set, so a retry is harmless).
func applyAll(t *testing.T, nodes []*raftNode, values []uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(values) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d values still not applied", len(values))
		}
		var leader *raftNode
		waitFor(t, 10*time.Second, "a leader", func() bool { leader = leaderOf(nodes); return leader != nil })
		futures := make([]raft.ApplyFuture, len(values))
		for i, v := range values {
			futures[i] = leader.r.Apply(binary.BigEndian.AppendUint64(nil, v), 5*time.Second)
		}
		var retry []uint64
		for i, f := range futures {
			if err := f.Error(); err != nil {
				retry = append(retry, values[i])
			} else if resp := f.Response(); resp != nil {
				t.Fatalf("FSM rejected value %d: %v", values[i], resp)
			}
		}
		values = retry
	}
}

// checkAllApplied waits until every FSM holds exactly want.
func checkAllApplied(t *testing.T, nodes []*raftNode, want int) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 10*time.Second, fmt.Sprintf("%s to apply %d values", n.id, want), func() bool {
			values, _ := n.fsm.state()
			return len(values) == want
		})
		values, _ := n.fsm.state()
		for v := uint64(1); v <= uint64(want); v++ {
			if !values[v] {
				t.Fatalf("%s: value %d missing", n.id, v)
			}
		}
	}
}

// checkLogReadable checks that the node's stored log is contiguous from
// FirstIndex to LastIndex and that compaction removed the prefix.
func checkLogReadable(t *testing.T, n *raftNode) (first, last uint64) {
	t.Helper()
	s := n.db.Group(raftGroup)
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if last, err = s.LastIndex(); err != nil {
		t.Fatal(err)
	}
	if first <= 1 || last < first {
		t.Fatalf("%s: log is %d..%d; want a compacted prefix", n.id, first, last)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("%s: GetLog(%d) in %d..%d: %v", n.id, i, first, last, err)
		}
	}
	return first, last
}

func TestRaftThreeNodesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three raft nodes")
	}
	var nodes []*raftNode
	var servers []raft.Server
	for i := 1; i <= 3; i++ {
		snaps, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 2, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		n := &raftNode{
			id:    raft.ServerID(fmt.Sprintf("n%d", i)),
			addr:  raft.ServerAddress(fmt.Sprintf("node%d", i)),
			dir:   t.TempDir(),
			snaps: snaps,
		}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: n.addr})
	}
	t.Cleanup(func() { stopNodes(t, nodes) })

	startNodes(t, nodes)
	// Neighbouring groups in the same DBs, with state that would derail
	// group 42 if it leaked into it (a huge term, foreign entries).
	for _, n := range nodes {
		for _, gid := range []uint64{raftGroup - 1, raftGroup + 1} {
			s := n.db.Group(gid)
			if err := s.SetUint64([]byte("CurrentTerm"), 999); err != nil {
				t.Fatal(err)
			}
			mustStore(t, s, entries(gid, 1, 500))
		}
	}
	if err := nodes[0].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatalf("BootstrapCluster: %v", err)
	}

	const total = 200
	var values []uint64
	for v := uint64(1); v <= total; v++ {
		values = append(values, v)
	}
	applyAll(t, nodes, values)
	checkAllApplied(t, nodes, total)

	// Force a snapshot on every node so the stores see prefix compaction.
	for _, n := range nodes {
		if err := n.r.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			t.Fatalf("%s: Snapshot: %v", n.id, err)
		}
		checkLogReadable(t, n)
	}
	var term uint64
	for _, n := range nodes {
		term = max(term, n.r.CurrentTerm())
	}

	// Restart every node from its closed and reopened DB.
	stopNodes(t, nodes)
	startNodes(t, nodes)
	for _, n := range nodes {
		s := n.db.Group(raftGroup)
		if ok, err := raft.HasExistingState(s, s, n.snaps); !ok || err != nil {
			t.Fatalf("%s: HasExistingState = %t, %v after restart", n.id, ok, err)
		}
		if got := n.r.CurrentTerm(); got < term || got >= 999 {
			t.Fatalf("%s: term after restart = %d, want >= %d and not a neighbour's", n.id, got, term)
		}
	}

	var leader *raftNode
	waitFor(t, 10*time.Second, "a leader after restart", func() bool { leader = leaderOf(nodes); return leader != nil })
	checkAllApplied(t, nodes, total)

	// The restarted group keeps working.
	applyAll(t, nodes, []uint64{total + 1, total + 2})
	checkAllApplied(t, nodes, total+2)
	for _, n := range nodes {
		first, last := checkLogReadable(t, n)
		t.Logf("%s: log %d..%d, term %d", n.id, first, last, n.r.CurrentTerm())
	}

	// The neighbours are untouched.
	for _, n := range nodes {
		for _, gid := range []uint64{raftGroup - 1, raftGroup + 1} {
			checkBounds(t, n.db.Group(gid), 1, 500)
		}
	}
}

// TestRaftFreshGroup checks the StableStore "not found" trap: a group with
// no state at all must let raft.NewRaft start (pebble.ErrNotFound would make
// it fail), even when other groups of the DB have state.
func TestRaftFreshGroup(t *testing.T) {
	db := openTest(t, "")
	neighbour := db.Group(raftGroup - 1)
	if err := neighbour.SetUint64([]byte("CurrentTerm"), 5); err != nil {
		t.Fatal(err)
	}
	mustStore(t, neighbour, entries(raftGroup-1, 1, 3))

	store := db.Group(raftGroup)
	snaps := raft.NewInmemSnapshotStore()
	if ok, err := raft.HasExistingState(store, store, snaps); ok || err != nil {
		t.Fatalf("HasExistingState(fresh group) = %t, %v; want false, nil", ok, err)
	}
	cache, err := raft.NewLogCache(64, store)
	if err != nil {
		t.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("")
	conf := testRaftConfig("solo")
	r, err := raft.NewRaft(conf, newSetFSM(), cache, store, snaps, trans)
	if err != nil {
		t.Fatalf("NewRaft on a fresh group: %v", err)
	}
	defer func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Error(err)
		}
	}()
	if got := r.CurrentTerm(); got != 0 {
		t.Fatalf("fresh group term = %d, want 0", got)
	}

	// And it can become a working single-node group.
	cfg := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	if err := r.Apply(binary.BigEndian.AppendUint64(nil, 1), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if term, err := store.GetUint64([]byte("CurrentTerm")); term == 0 || err != nil {
		t.Fatalf("stored CurrentTerm = %d, %v", term, err)
	}
	checkBounds(t, neighbour, 1, 3)
}
