package transport

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// An append that tells the follower nothing new is answered by the
// pipeline itself; any that carries news (entries, a higher commit index,
// another previous entry or term) or comes after the follower went quiet
// crosses the wire.
func TestQuietAppends(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	var seen atomic.Int64
	serve(t, gb, func(rpc raft.RPC) {
		seen.Add(1)
		c := rpc.Command.(*raft.AppendEntriesRequest)
		// The follower's log ends at the request's last entry.
		last := c.PrevLogEntry + uint64(len(c.Entries))
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, LastLog: last, Success: true}, nil)
	})
	p, err := ga.AppendEntriesPipeline("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	// send pipelines req, waits for its answer and reports whether it
	// crossed the wire.
	send := func(what string, req *raft.AppendEntriesRequest) (wire bool) {
		t.Helper()
		before := seen.Load()
		resp := new(raft.AppendEntriesResponse)
		if _, err := p.AppendEntries(req, resp); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case f := <-p.Consumer():
			if err := f.Error(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if !f.Response().Success || f.Response().Term != req.Term || f.Response().LastLog != req.PrevLogEntry+uint64(len(req.Entries)) {
				t.Fatalf("%s: answered %+v", what, f.Response())
			}
		case <-time.After(scaled(5 * time.Second)):
			t.Fatalf("%s: no answer", what)
		}
		return seen.Load() != before
	}
	empty := func(term, prev, commit uint64) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{Term: term, RPCHeader: raft.RPCHeader{Addr: []byte("a")}, PrevLogEntry: prev, PrevLogTerm: term, LeaderCommitIndex: commit}
	}
	entries := &raft.AppendEntriesRequest{Term: 2, RPCHeader: raft.RPCHeader{Addr: []byte("a")}, LeaderCommitIndex: 0,
		Entries: []*raft.Log{{Index: 1, Term: 2}, {Index: 2, Term: 2}, {Index: 3, Term: 2}}}

	steps := []struct {
		what string
		req  *raft.AppendEntriesRequest
		wire bool
	}{
		{"entries", entries, true},
		{"commit index the follower has not heard", empty(2, 3, 3), true},
		{"the same again", empty(2, 3, 3), false},
		{"and again", empty(2, 3, 3), false},
		{"a lower commit index", empty(2, 3, 2), false},
		{"a higher commit index", empty(2, 3, 4), true},
		{"another previous entry", empty(2, 2, 3), true},
		{"back at the end", empty(2, 3, 3), true}, // the follower's last answer was for entry 2
		{"quiet again", empty(2, 3, 3), false},
		{"another term", empty(3, 3, 3), true},
	}
	for _, s := range steps {
		if got := send(s.what, s.req); got != s.wire {
			t.Fatalf("%s: crossed the wire %v, want %v", s.what, got, s.wire)
		}
	}
	if got := a.metric(t, "shardnet_transport_quiet_appends_total"); got != 4 {
		t.Fatalf("quiet_appends_total %v, want 4", got)
	}
	// A follower whose last real answer is older than quietContact is
	// asked for real: that answer is what the leader lease counts on.
	if send("term 3 settled", empty(3, 3, 3)) {
		t.Fatal("an append the follower had just answered crossed the wire")
	}
	time.Sleep(quietContact + 100*time.Millisecond)
	if !send("after a quiet second", empty(3, 3, 3)) {
		t.Fatal("an append with no recent answer from the follower was answered locally")
	}
	// Heartbeats always cross the wire (they are the real contact).
	resp := new(raft.AppendEntriesResponse)
	before := seen.Load()
	hb := &raft.AppendEntriesRequest{Term: 3, RPCHeader: raft.RPCHeader{Addr: []byte("a")}}
	if err := ga.AppendEntries("b", b.Addr(), hb, resp); err != nil {
		t.Fatal(err)
	}
	if seen.Load() == before {
		t.Fatal("a heartbeat did not cross the wire")
	}
}

// A quiet answer trusts what the follower said over the session live now
// and since its last failed exchange: a follower whose node restarted (a
// new session) or whose replica failed an exchange (closed, perhaps opened
// again in place) has lost the commit index it was told, and the next
// append goes on the wire.
func TestQuietAppendsTrustOneSession(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	var seen atomic.Int64
	var refuse atomic.Bool
	serve(t, gb, func(rpc raft.RPC) {
		seen.Add(1)
		c := rpc.Command.(*raft.AppendEntriesRequest)
		if refuse.Load() {
			rpc.Respond(nil, errors.New("replica closed"))
			return
		}
		// A heartbeat is answered with the follower's last entry, as
		// raft's follower does; the log here ends at 3.
		last := c.PrevLogEntry + uint64(len(c.Entries))
		if isHeartbeat(c) {
			last = 3
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, LastLog: last, Success: true}, nil)
	})
	send := func(what string, req *raft.AppendEntriesRequest) (wire bool, err error) {
		t.Helper()
		before := seen.Load()
		resp := new(raft.AppendEntriesResponse)
		err = ga.AppendEntries("b", b.Addr(), req, resp)
		if err == nil && (!resp.Success || !isHeartbeat(req) && resp.LastLog != req.PrevLogEntry+uint64(len(req.Entries))) {
			t.Fatalf("%s: answered %+v", what, resp)
		}
		return seen.Load() != before, err
	}
	must := func(what string, req *raft.AppendEntriesRequest, wire bool) {
		t.Helper()
		got, err := send(what, req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got != wire {
			t.Fatalf("%s: crossed the wire %v, want %v", what, got, wire)
		}
	}
	empty := &raft.AppendEntriesRequest{Term: 2, RPCHeader: raft.RPCHeader{Addr: []byte("a")}, PrevLogEntry: 3, PrevLogTerm: 2, LeaderCommitIndex: 3}
	entries := &raft.AppendEntriesRequest{Term: 2, RPCHeader: raft.RPCHeader{Addr: []byte("a")}, LeaderCommitIndex: 3,
		Entries: []*raft.Log{{Index: 1, Term: 2}, {Index: 2, Term: 2}, {Index: 3, Term: 2}}}
	must("entries", entries, true)
	must("nothing new", empty, false)

	// The follower's node "restarts": the session ends and a heartbeat
	// (or a probe) dials a new one; the follower answers it, but the next
	// append must still reach it.
	a.dropPeer(string(b.Addr()))
	must("a heartbeat", &raft.AppendEntriesRequest{Term: 2, RPCHeader: raft.RPCHeader{Addr: []byte("a")}}, true)
	must("the first append over a new session", empty, true)
	must("the next one", empty, false)

	// An exchange fails (the follower's replica closed): whatever it said
	// before no longer answers for it.
	refuse.Store(true)
	if _, err := send("refused", entries); err == nil {
		t.Fatal("a refused append succeeded")
	}
	refuse.Store(false)
	must("the first append after a failed exchange", empty, true)
	must("quiet again", empty, false)
}

// Raft over quiet appends: followers of idle groups still learn the commit
// index of a lone write at once (the append that carries it is news), and
// the groups' idle appends stay off the wire.
func TestRaftQuietGroups(t *testing.T) {
	gids := []uint64{7, 8}
	c := newIdleCluster(t, gids)
	quiet := func() float64 { return c.metric("shardnet_transport_quiet_appends_total") }
	q0 := quiet()
	time.Sleep(500 * time.Millisecond)
	if q := quiet() - q0; q < 10 {
		t.Fatalf("%v quiet appends in 500 ms of two idle groups at a 20 ms commit timeout, want many", q)
	}
	// A lone write in each group reaches every follower's state machine
	// well within quietRefresh: its commit index is news, so the append
	// carrying it goes out.
	c.loneWrites(gids, 3, "an idle group")
}

// A group with a quiet interval sends a follower a real heartbeat only
// when its last real one is that old, and answers those in between itself;
// never in a term's first moments, for a read's confirmation (Urgent), or
// once the follower's node stops answering probes.
func TestQuietHeartbeats(t *testing.T) {
	was := quietAfterTerm
	t.Cleanup(func() { quietAfterTerm = was })
	quietAfterTerm = 500 * time.Millisecond
	const every = 2 * time.Second
	faults := NewFaults()
	t.Cleanup(faults.Heal)
	a := newTestNode(t, "k", func(c *Config) { c.Faults = faults })
	b := newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	var seen atomic.Int64
	serve(t, gb, func(rpc raft.RPC) {
		seen.Add(1)
		c := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, LastLog: 7, Success: true}, nil)
	})
	ga.SetQuietHeartbeats(every)
	target := b.Addr()
	waitFor(t, 5*time.Second, "b to answer probes", func() bool { return a.PeerHealthy(string(target)) })

	// beat sends a heartbeat of term and reports whether it crossed the
	// wire; a local answer must be the follower's last one.
	beat := func(what string, term uint64) (wire bool) {
		t.Helper()
		before := seen.Load()
		resp := new(raft.AppendEntriesResponse)
		if err := ga.AppendEntries("b", target, heartbeatReq(term), resp); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !resp.Success || resp.Term != term || resp.LastLog != 7 {
			t.Fatalf("%s: answered %+v", what, resp)
		}
		return seen.Load() != before
	}
	steps := []struct {
		what  string
		term  uint64
		sleep time.Duration // before the heartbeat
		wire  bool
	}{
		{"the first of term 2", 2, 0, true},
		{"again at once: the term is young", 2, 0, true},
		{"the term settled", 2, quietAfterTerm, false},
		{"and again", 2, 0, false},
		{"a new term", 3, 0, true},
		{"the new term is young", 3, 0, true},
		{"the new term settled", 3, quietAfterTerm, false},
	}
	locals := 0
	for _, s := range steps {
		time.Sleep(s.sleep)
		if got := beat(s.what, s.term); got != s.wire {
			t.Fatalf("%s: crossed the wire %v, want %v", s.what, got, s.wire)
		} else if !got {
			locals++
		}
	}
	// A read's confirmation goes out.
	ga.Urgent()
	if !beat("for a read", 3) {
		t.Fatal("a heartbeat confirming a read was answered locally")
	}
	// Past the quiet interval (and the read's urgency), a real one again.
	time.Sleep(every + 100*time.Millisecond)
	if !beat("after the quiet interval", 3) {
		t.Fatal("a heartbeat after the quiet interval was answered locally")
	}
	if beat("right after a real one", 3) {
		t.Fatal("a heartbeat right after a real one crossed the wire")
	}
	locals++
	if got := a.metric(t, "shardnet_transport_quiet_heartbeats_total"); got != float64(locals) {
		t.Fatalf("quiet_heartbeats_total %v, want %d", got, locals)
	}

	// Cut off: b's answers (the probes' too) stop reaching a. Within a
	// second or so the probes call b unhealthy, and the next heartbeat,
	// well inside the quiet interval of the last real one, goes out.
	last := time.Now()
	faults.Hold(string(target))
	waitFor(t, 5*time.Second, "b to stop answering probes", func() bool { return !a.PeerHealthy(string(target)) })
	if time.Since(last) >= every {
		t.Skip("the probes took longer than the quiet interval to notice (a slow machine): nothing to test")
	}
	before := seen.Load()
	done := make(chan error, 1)
	go func() {
		resp := new(raft.AppendEntriesResponse)
		done <- ga.AppendEntries("b", target, heartbeatReq(3), resp)
	}()
	select {
	case err := <-done:
		t.Fatalf("a heartbeat to a node that stopped answering probes was answered at once (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	waitFor(t, 5*time.Second, "the heartbeat to reach b", func() bool { return seen.Load() > before })
	faults.Release(string(target))
	<-done
}

// Raft over quiet heartbeats: idle groups keep their leaders (followers
// still hear a real heartbeat well within their timeout), most heartbeats
// stay home, and writes go on as before.
func TestRaftQuietHeartbeats(t *testing.T) {
	// Restored after the cluster's cleanups (registered later, run first):
	// its raft goroutines read it until then.
	was := quietAfterTerm
	t.Cleanup(func() { quietAfterTerm = was })
	quietAfterTerm = 300 * time.Millisecond
	gids := []uint64{21, 22}
	c := newIdleCluster(t, gids)
	for _, gid := range gids {
		for _, r := range c.groups[gid] {
			// A tenth to a fifth of the 500 ms heartbeat timeout between
			// raft's heartbeats; a real one every 175-225 ms (a quarter of
			// the timeout, as shard.QuietHeartbeatEvery).
			r.trans.SetQuietHeartbeats(125 * time.Millisecond)
		}
	}
	terms := map[uint64]uint64{}
	for _, gid := range gids {
		terms[gid] = c.leader(gid).raft.CurrentTerm()
	}
	q0 := c.metric("shardnet_transport_quiet_heartbeats_total")
	time.Sleep(2 * time.Second)
	if q := c.metric("shardnet_transport_quiet_heartbeats_total") - q0; q < 5 {
		t.Fatalf("%v quiet heartbeats in 2 s of two idle groups, want several", q)
	}
	for _, gid := range gids {
		l := c.leader(gid)
		if l == nil || l.raft.CurrentTerm() != terms[gid] {
			t.Fatalf("group %d changed leaders while idle with quiet heartbeats", gid)
		}
	}
	c.loneWrites(gids, 3, "a group with quiet heartbeats")
}

// A batched heartbeat of a group with quiet heartbeats waits for others up
// to an eighth of its quiet interval; a heartbeat of another group that
// joins its batch brings the batch forward to its own, shorter wait.
func TestQuietHeartbeatBatchWait(t *testing.T) {
	const every = 8 * time.Second // batches wait up to 1 s
	a := newTestNode(t, "k", func(c *Config) { c.HeartbeatBatch = 20 * time.Millisecond })
	b := newTestNode(t, "k", func(c *Config) { c.HeartbeatBatch = 20 * time.Millisecond })
	answer := func(rpc raft.RPC) {
		c := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, Success: true}, nil)
	}
	quiet, _ := a.Group(1)
	other, _ := a.Group(2)
	quiet.SetQuietHeartbeats(every)
	for _, gid := range []uint64{1, 2} {
		g, _ := b.Group(gid)
		g.SetHeartbeatHandler(answer)
	}
	beat := func(g *GroupTransport, term uint64) error {
		return g.AppendEntries("b", b.Addr(), heartbeatReq(term), new(raft.AppendEntriesResponse))
	}
	// Connect first, so that the timings below are the batches'.
	if err := beat(other, 1); err != nil {
		t.Fatal(err)
	}
	batches := func() float64 { return a.metric(t, "shardnet_transport_heartbeat_batches_sent_total") }

	start, n0 := time.Now(), batches()
	if err := beat(quiet, 2); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < every/quietBatchShare-50*time.Millisecond {
		t.Fatalf("a quiet group's lone heartbeat went out after %v, want about %v", took, every/quietBatchShare)
	}
	if got := batches() - n0; got != 1 {
		t.Fatalf("%v batches for one heartbeat", got)
	}

	start, n0 = time.Now(), batches()
	done := make(chan error, 1)
	go func() { done <- beat(quiet, 3) }() // a new term: not answered locally
	time.Sleep(50 * time.Millisecond)
	if err := beat(other, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= every/quietBatchShare-100*time.Millisecond {
		t.Fatalf("a batch joined by a heartbeat that waits 20 ms went out after %v", took)
	}
	if got := batches() - n0; got != 1 {
		t.Fatalf("the two heartbeats went in %v batches, want one", got)
	}
}
