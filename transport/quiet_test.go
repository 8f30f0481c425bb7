package transport

import (
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
