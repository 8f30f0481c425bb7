package shard

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard/logstore"
	"github.com/shardnet/shardnet/transport"
)

// Power loss, not kill -9: a killed process leaves its writes in the page
// cache, so a missing fsync goes unnoticed. Here every file of a node (the
// Raft log store, the state store, replica records, snapshots) lives on
// pebble's crashable in-memory FS, and cutting the power keeps only what was
// synced (vfs.MemFS.CrashClone): the node restarts on that clone.

const powerGroup = 1

// powerTiming snapshots often and keeps a short log, so that a node which
// was down catches up through a snapshot and logs are compacted under load.
func powerTiming() RaftTiming {
	t := fastTiming()
	t.SnapshotInterval = 200 * time.Millisecond
	t.SnapshotThreshold = 128
	t.TrailingLogs = 32
	return t
}

// powerNode is a node on a crashable FS, restarted in place after a cut.
type powerNode struct {
	id, dir, addr string
	fs            *vfs.MemFS
	n             *testNode
	// down is set (and cuts counted) before the power is cut: a write
	// acknowledged by this node's replica once it is set, or across a
	// cut, may have been acknowledged after the cut, which a real power
	// loss makes impossible, so it counts as not acknowledged.
	down atomic.Bool
	cuts atomic.Int64 // power losses so far
}

func (p *powerNode) start(t *testing.T) {
	t.Helper()
	tr, err := transport.New(transport.Config{BindAddr: p.addr, ClusterKey: []byte("k"), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(Config{DataDir: p.dir, NodeID: p.id, ServerID: ServerIDFor(p.id, "1"), Transport: tr,
		Raft: powerTiming(), FS: p.fs, LeaderRebalance: -1})
	if err != nil {
		tr.Close()
		t.Fatalf("open %s after power loss: %v", p.id, err)
	}
	if err := m.StartExisting(); err != nil {
		t.Fatalf("start replicas of %s: %v", p.id, err)
	}
	p.n = &testNode{id: p.id, dir: p.dir, trans: tr, m: m}
	p.addr = string(tr.Addr())
	p.down.Store(false)
}

// isolate is the first instant of a power loss: from now on nothing this
// node does reaches its peers (nor is it counted as acknowledged), so the
// synced state taken next is all the rest of the cluster ever sees of it.
func (p *powerNode) isolate() {
	p.cuts.Add(1)
	p.down.Store(true)
	p.n.trans.Close()
}

// crash takes what was synced as the node's disk and stops the node; the
// writes it makes while it stops go to the old FS and are lost.
func (p *powerNode) crash(t *testing.T) {
	t.Helper()
	p.fs = p.fs.CrashClone(vfs.CrashCloneCfg{})
	if err := p.n.m.Kill(); err != nil {
		t.Logf("kill %s: %v", p.id, err)
	}
	p.n.killed = true
}

func (p *powerNode) replica() *Replica {
	if p.down.Load() {
		return nil
	}
	r, _ := p.n.m.Replica(powerGroup)
	return r
}

// durable is what a node's disk holds for the group after a power loss,
// read before the node restarts.
type durable struct {
	term, voteTerm      uint64
	firstIndex, lastIdx uint64
	snapIndex           uint64
	applied             uint64
	keys                map[string]string
}

// readDurable opens the node's databases and snapshot store on its FS and
// checks what must hold after any power loss: the log is compacted only
// behind a snapshot that opens (its CRC checks out), and the state holds
// no half-applied transaction.
func (p *powerNode) readDurable(t *testing.T) durable {
	t.Helper()
	var d durable
	logs, err := logstore.Open(filepath.Join(p.dir, "raftlog"), logstore.Options{FS: p.fs})
	if err != nil {
		t.Fatalf("%s: open log store after power loss: %v", p.id, err)
	}
	g := logs.Group(powerGroup)
	d.term, _ = g.GetUint64([]byte("CurrentTerm"))
	d.voteTerm, _ = g.GetUint64([]byte("LastVoteTerm"))
	d.firstIndex, _ = g.FirstIndex()
	d.lastIdx, _ = g.LastIndex()
	if err := logs.Close(); err != nil {
		t.Fatal(err)
	}
	snaps, err := newSnapStore(p.fs, filepath.Join(p.dir, "replicas", strconv.Itoa(powerGroup)), 1, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("%s: snapshot store after power loss: %v", p.id, err)
	}
	list, err := snaps.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) > 0 {
		d.snapIndex = list[0].Index
		_, rc, err := snaps.Open(list[0].ID)
		if err != nil {
			t.Errorf("%s: snapshot %s does not open after power loss: %v", p.id, list[0].ID, err)
		} else {
			rc.Close()
		}
	}
	if d.firstIndex > 1 && d.snapIndex+1 < d.firstIndex {
		t.Errorf("%s: after power loss the log starts at %d but the newest snapshot is at %d: entries %d-%d are gone",
			p.id, d.firstIndex, d.snapIndex, d.snapIndex+1, d.firstIndex-1)
	}
	st, err := fsm.OpenStore(filepath.Join(p.dir, "state"), fsm.StoreOptions{FS: p.fs})
	if err != nil {
		t.Fatalf("%s: open state after power loss: %v", p.id, err)
	}
	ch, err := st.Channel(powerGroup)
	if err != nil {
		t.Fatal(err)
	}
	d.applied = ch.Applied()
	d.keys = listAll(t, ch)
	ch.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	checkAllOrNothing(t, p.id+" (durable state)", d.keys)
	return d
}

func listAll(t *testing.T, ch *fsm.Channel) map[string]string {
	t.Helper()
	out := map[string]string{}
	var after []byte
	for {
		ents, more, err := ch.List(nil, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			out[string(e.Key)] = string(e.Value)
			after = e.Key
		}
		if !more {
			return out
		}
	}
}

// The workload: writer w's transaction i puts a/w/i and b/w/i to the same
// value and last/w to i, all in one entry.
func txnKeys(w, i int) (a, b, last, val string) {
	return fmt.Sprintf("a/%d/%06d", w, i), fmt.Sprintf("b/%d/%06d", w, i), fmt.Sprintf("last/%d", w), fmt.Sprintf("v%d.%d", w, i)
}

// checkAllOrNothing fails if a transaction is only partly in keys.
func checkAllOrNothing(t *testing.T, who string, keys map[string]string) {
	t.Helper()
	for k, v := range keys {
		var w, i int
		var other string
		switch {
		case k[0] == 'a':
			fmt.Sscanf(k, "a/%d/%d", &w, &i)
			_, other, _, _ = txnKeys(w, i)
		case k[0] == 'b':
			fmt.Sscanf(k, "b/%d/%d", &w, &i)
			other, _, _, _ = txnKeys(w, i)
		case k[0] == 'l':
			fmt.Sscanf(k, "last/%d", &w)
			i, _ = strconv.Atoi(v)
			other, _, _, _ = txnKeys(w, i)
		default:
			continue
		}
		_, _, _, val := txnKeys(w, i)
		if got, ok := keys[other]; !ok || got != val {
			t.Errorf("%s: half a transaction: %s=%q but %s=%q (present %v)", who, k, v, other, got, ok)
		}
	}
}

type ledger struct {
	mu    sync.Mutex
	acked map[int][]int // writer -> transactions acknowledged before any cut of the node that answered
	last  map[int]int   // writer -> the highest transaction sent
	n     atomic.Int64  // acknowledgements counted
}

func TestPowerLossKeepsAcknowledgedWrites(t *testing.T) {
	nodes := make([]*powerNode, 3)
	var peers []raft.Server
	for i := range nodes {
		p := &powerNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: "127.0.0.1:0", fs: vfs.NewCrashableMem()}
		p.start(t)
		nodes[i] = p
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: ServerIDFor(p.id, "1"), Address: raft.ServerAddress(p.addr)})
	}
	var mu sync.Mutex // guards nodes[i].n and nodes[i].fs against the writers
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range nodes {
			p.n.stop(t)
		}
	})
	for i := len(nodes) - 1; i >= 0; i-- {
		if _, err := nodes[i].n.m.Ensure(ReplicaSpec{GroupID: powerGroup, Channel: "c", Peers: peers}); err != nil {
			t.Fatal(err)
		}
	}
	leaderOf := func() (*powerNode, *Replica) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range nodes {
			if r := p.replica(); r != nil && r.Raft().State() == raft.Leader {
				return p, r
			}
		}
		return nil, nil
	}
	waitLeader := func(d time.Duration) (*powerNode, *Replica) {
		t.Helper()
		var p *powerNode
		var r *Replica
		waitFor(t, d, func() error {
			if p, r = leaderOf(); r == nil {
				return errors.New("no leader")
			}
			return nil
		})
		return p, r
	}
	waitLeader(10 * time.Second)

	l := &ledger{acked: map[int][]int{}, last: map[int]int{}}
	stop := make(chan struct{})
	var writers sync.WaitGroup
	const nWriters = 4
	for w := range nWriters {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p, r := leaderOf()
				if r == nil {
					time.Sleep(5 * time.Millisecond) // polling for a leader
					continue
				}
				a, b, last, val := txnKeys(w, i)
				cmd, err := fsm.Encode(&fsm.Txn{Success: []fsm.Op{
					{Type: fsm.OpPut, Key: []byte(a), Value: []byte(val)},
					{Type: fsm.OpPut, Key: []byte(b), Value: []byte(val)},
					{Type: fsm.OpPut, Key: []byte(last), Value: []byte(strconv.Itoa(i))},
				}})
				if err != nil {
					t.Error(err)
					return
				}
				l.mu.Lock()
				l.last[w] = i
				l.mu.Unlock()
				cuts := p.cuts.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				res, err := r.Propose(ctx, cmd)
				cancel()
				if err != nil || res.Err != nil || !res.Succeeded || p.down.Load() || p.cuts.Load() != cuts {
					continue // not acknowledged, or maybe only after the power was cut
				}
				l.mu.Lock()
				l.acked[w] = append(l.acked[w], i)
				l.mu.Unlock()
				l.n.Add(1)
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		writers.Wait()
	}()
	waitAcks := func(n int64) {
		t.Helper()
		target := l.n.Load() + n
		waitFor(t, 15*time.Second, func() error {
			if got := l.n.Load(); got < target {
				return fmt.Errorf("%d of %d acknowledged writes", got, target)
			}
			return nil
		})
	}
	waitAcks(300)
	// Every node has a snapshot and a compacted log before the first cut.
	waitFor(t, 15*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range nodes {
			r := p.replica()
			if first, _ := r.logs.FirstIndex(); first <= 1 {
				return fmt.Errorf("%s: log not compacted yet", p.id)
			}
		}
		return nil
	})

	// 1. The leader loses power under load. The others elect and go on,
	// long enough to compact their logs past its last entry, so that it
	// catches up through a snapshot when it is back.
	old, oldRep := leaderOf()
	if old == nil {
		t.Fatal("no leader")
	}
	// locked runs f with the nodes locked, and unlocks them even if f
	// fails the test or raft panics, so that the writers can stop.
	locked := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		f()
	}
	var term uint64
	locked(func() {
		old.isolate()
		term = oldRep.Raft().CurrentTerm()
		old.crash(t)
	})
	d := old.readDurable(t)
	t.Logf("%s lost power as leader in term %d: disk has term %d, log %d-%d, snapshot %d, state applied %d",
		old.id, term, d.term, d.firstIndex, d.lastIdx, d.snapIndex, d.applied)
	if d.term < term {
		t.Errorf("%s: term %d after power loss, was %d: the stable store lost it", old.id, d.term, term)
	}
	if t.Failed() {
		t.FailNow()
	}
	_, newRep := waitLeader(10 * time.Second)
	waitAcks(200)
	waitFor(t, 15*time.Second, func() error {
		if first, _ := newRep.logs.FirstIndex(); first <= d.lastIdx+1 {
			return fmt.Errorf("leader's log starts at %d, the node that lost power has up to %d", first, d.lastIdx)
		}
		return nil
	})
	locked(func() { old.start(t) })
	back, ok := old.n.m.Replica(powerGroup)
	if !ok {
		t.Fatalf("%s has no replica after power loss (its record is gone)", old.id)
	}
	target := newRep.FSM().Applied()
	waitFor(t, 15*time.Second, func() error {
		if got := back.FSM().Applied(); got < target {
			return fmt.Errorf("%s applied %d of %d", old.id, got, target)
		}
		return nil
	})

	// 2. Every node loses power at once, still under load, right after the
	// first one caught up (its state is the snapshot it was sent).
	terms := make([]uint64, len(nodes))
	locked(func() {
		for i, p := range nodes {
			p.isolate()
			rep, _ := p.n.m.Replica(powerGroup)
			terms[i] = rep.Raft().CurrentTerm()
		}
		for _, p := range nodes {
			p.crash(t)
		}
	})
	close(stop)
	writers.Wait()
	for i, p := range nodes {
		d := p.readDurable(t)
		t.Logf("%s lost power: disk has term %d (was %d), log %d-%d, snapshot %d, state applied %d, %d keys",
			p.id, d.term, terms[i], d.firstIndex, d.lastIdx, d.snapIndex, d.applied, len(d.keys))
		if d.term < terms[i] {
			t.Errorf("%s: term %d after power loss, was %d: the stable store lost it", p.id, d.term, terms[i])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	locked(func() {
		for _, p := range nodes {
			p.start(t)
		}
	})
	_, r := waitLeader(20 * time.Second)
	var final *fsm.Result
	cmd, _ := fsm.Encode(&fsm.Put{Key: []byte("final"), Value: []byte("x")})
	waitFor(t, 10*time.Second, func() error {
		var err error
		final, err = r.Propose(context.Background(), cmd)
		return err
	})

	// Every replica holds every acknowledged write, no half transaction,
	// nothing never sent, and the same data as the others.
	var want map[string]string
	for _, p := range nodes {
		rep, ok := p.n.m.Replica(powerGroup)
		if !ok {
			t.Fatalf("%s has no replica after power loss (its record is gone)", p.id)
		}
		waitFor(t, 15*time.Second, func() error {
			if got := rep.FSM().Applied(); got < final.Index {
				return fmt.Errorf("%s applied %d of %d", p.id, got, final.Index)
			}
			return nil
		})
		keys := listAll(t, rep.FSM())
		checkAllOrNothing(t, p.id, keys)
		missing := 0
		for w, is := range l.acked {
			for _, i := range is {
				a, _, last, val := txnKeys(w, i)
				n, _ := strconv.Atoi(keys[last])
				if keys[a] != val || n < i {
					if missing++; missing <= 5 {
						t.Errorf("%s: acknowledged transaction %d of writer %d lost: %s=%q, %s=%q", p.id, i, w, a, keys[a], last, keys[last])
					}
				}
			}
		}
		if missing > 0 {
			t.Errorf("%s: %d acknowledged transactions lost", p.id, missing)
		}
		for w := range nWriters {
			_, _, last, _ := txnKeys(w, 0)
			if n, _ := strconv.Atoi(keys[last]); n > l.last[w] {
				t.Errorf("%s: %s=%d, never sent", p.id, last, n)
			}
		}
		if want == nil {
			want = keys
		} else if len(keys) != len(want) {
			t.Errorf("%s holds %d keys, %s holds %d", p.id, len(keys), nodes[0].id, len(want))
		} else {
			for k, v := range want {
				if keys[k] != v {
					t.Errorf("%s: %s=%q, %s has %q", p.id, k, keys[k], nodes[0].id, v)
					break
				}
			}
		}
	}
	acked := 0
	for _, is := range l.acked {
		acked += len(is)
	}
	t.Logf("%d acknowledged transactions checked on %d replicas (%d keys each)", acked, len(nodes), len(want))
}

// A node's term and vote must survive a power loss: a voter that forgot its
// vote could vote again in the same term, for another candidate, and two
// leaders could be elected in one term. Under load the next synced append
// also makes the term durable (one WAL), so this cuts the power of a node
// that stood for election (as failover makes it: TimeoutNow, no pre-vote)
// and has appended nothing since.
func TestPowerLossKeepsTermAndVote(t *testing.T) {
	nodes := make([]*powerNode, 3)
	var peers []raft.Server
	for i := range nodes {
		p := &powerNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: "127.0.0.1:0", fs: vfs.NewCrashableMem()}
		p.start(t)
		t.Cleanup(func() { p.n.stop(t) })
		nodes[i] = p
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: ServerIDFor(p.id, "1"), Address: raft.ServerAddress(p.addr)})
	}
	reps := make([]*Replica, len(nodes))
	for i := len(nodes) - 1; i >= 0; i-- {
		r, err := nodes[i].n.m.Ensure(ReplicaSpec{GroupID: powerGroup, Channel: "c", Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = r
	}
	leader := -1
	waitFor(t, 10*time.Second, func() error {
		for i, r := range reps {
			if r.Raft().State() == raft.Leader {
				leader = i
				return nil
			}
		}
		return errors.New("no leader")
	})
	put(t, reps[leader], "k", "v")
	f := (leader + 1) % 3
	waitFor(t, 10*time.Second, func() error {
		if reps[f].Raft().LastIndex() < reps[leader].Raft().LastIndex() {
			return errors.New("follower behind")
		}
		return nil
	})
	for i, p := range nodes {
		if i != f {
			p.isolate()
			p.crash(t)
		}
	}
	before := reps[f].Raft().CurrentTerm()
	addr, id := reps[f].Raft().LeaderWithID()
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}}
	if _, err := reps[f].trans.DeliverLocal(req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if reps[f].Raft().CurrentTerm() <= before {
			return fmt.Errorf("term still %d", before)
		}
		return nil
	})
	p := nodes[f]
	p.isolate()
	term := reps[f].Raft().CurrentTerm()
	p.crash(t)
	d := p.readDurable(t)
	t.Logf("%s stood in term %d (from %d); after power loss its disk has term %d, vote term %d", p.id, term, before, d.term, d.voteTerm)
	if d.term < term {
		t.Errorf("%s: term %d after power loss, was %d: the stable store's term was not synced", p.id, d.term, term)
	}
	if d.voteTerm < term {
		t.Errorf("%s: vote term %d after power loss, voted in %d: the stable store's vote was not synced", p.id, d.voteTerm, term)
	}
}
