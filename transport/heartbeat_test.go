package transport

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Heartbeats of many groups to one peer travel in a few frames, and every
// group gets its own group's answer.
func TestHeartbeatsTravelInBatches(t *testing.T) {
	batch := func(c *Config) { c.HeartbeatBatch = 20 * time.Millisecond }
	a, b := newTestNode(t, "k", batch), newTestNode(t, "k", batch)
	const groups = 50
	var gas []*GroupTransport
	for gid := uint64(1); gid <= groups; gid++ {
		ga, err := a.Group(gid)
		if err != nil {
			t.Fatal(err)
		}
		gas = append(gas, ga)
		gb, err := b.Group(gid)
		if err != nil {
			t.Fatal(err)
		}
		// Each group answers with its own id in the term: a mixed-up
		// batch shows.
		gb.SetHeartbeatHandler(func(rpc raft.RPC) {
			rpc.Respond(&raft.AppendEntriesResponse{Term: gid*1000 + rpc.Command.(*raft.AppendEntriesRequest).Term, LastLog: gid + 500, Success: true}, nil)
		})
	}
	// Group 99 exists only on a: its heartbeat fails, the others do not.
	g99, _ := a.Group(99)
	var wg sync.WaitGroup
	errs := make([]error, groups+1)
	for i, ga := range gas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp raft.AppendEntriesResponse
			if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(7), &resp); err != nil {
				errs[i] = err
			} else if want := ga.ID()*1000 + 7; resp.Term != want || !resp.Success {
				errs[i] = &RemoteError{Msg: "wrong answer"}
				t.Errorf("group %d got term %d, want %d", ga.ID(), resp.Term, want)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var resp raft.AppendEntriesResponse
		errs[groups] = g99.AppendEntries("b", b.Addr(), heartbeatReq(7), &resp)
	}()
	wg.Wait()
	for i, err := range errs[:groups] {
		if err != nil {
			t.Fatalf("group %d: %v", i+1, err)
		}
	}
	if err := errs[groups]; err == nil || !strings.Contains(err.Error(), "unknown group 99") {
		t.Fatalf("group 99: %v, want unknown group", err)
	}
	// Each answer also told the leader side how far that follower's log
	// is (the rebalancer's caught-up check in groups that take no writes).
	for _, ga := range gas {
		last, age, ok := ga.FollowerLastLog(b.Addr())
		if !ok || last != ga.ID()+500 || age > time.Minute {
			t.Fatalf("group %d: FollowerLastLog = %d, %v, %v; want %d from its heartbeat", ga.ID(), last, age, ok, ga.ID()+500)
		}
	}
	if _, _, ok := g99.FollowerLastLog(b.Addr()); ok {
		t.Fatal("group 99's failed heartbeat recorded a follower log")
	}
	sent := a.metric(t, "shardnet_transport_rpcs_sent_total")
	frames := a.metric(t, "shardnet_transport_heartbeat_batches_sent_total")
	if sent != groups+1 || frames < 1 || frames > 5 {
		t.Fatalf("%v heartbeats in %v frames, want %d in a few", sent, frames, groups+1)
	}
	// And the frames took a few writes to the connection, not one each.
	if writes := a.metric(t, "shardnet_transport_conn_writes_total"); writes < 1 || writes >= sent {
		t.Fatalf("%v heartbeats in %v connection writes, want fewer writes", sent, writes)
	}
}

// A group about to confirm its leadership for a read sends its heartbeats
// at once, and what it had queued goes out with them.
func TestUrgentHeartbeatsSkipTheBatch(t *testing.T) {
	// A window far longer than the test: only Urgent can send in time.
	batch := func(c *Config) { c.HeartbeatBatch = time.Hour }
	a, b := newTestNode(t, "k", batch), newTestNode(t, "k", batch)
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	gb.SetHeartbeatHandler(echoHandler)
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- ga.AppendEntries("b", b.Addr(), heartbeatReq(3), &resp)
	}()
	// Wait until it is queued, then mark the group urgent.
	deadline := time.Now().Add(5 * time.Second)
	for !a.batcher(b.Addr()).holds(ga) {
		if time.Now().After(deadline) {
			t.Fatal("heartbeat never queued")
		}
		time.Sleep(time.Millisecond)
	}
	ga.Urgent()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued heartbeat did not go out after Urgent")
	}
	// While urgent, heartbeats do not queue at all.
	var resp raft.AppendEntriesResponse
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(4), &resp); err != nil || resp.Term != 4 {
		t.Fatalf("urgent heartbeat: %v %+v", err, resp)
	}
}

func FuzzDecodeHeartbeats(f *testing.F) {
	req := appendAppendEntriesRequest(nil, heartbeatReq(3))
	f.Add(appendBytes([]byte{1, 5}, req))
	f.Add([]byte{2, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeHeartbeatsRequest(b)
		_, _, _ = decodeHeartbeatsResponse(b, 2)
	})
}

// AckedSince counts an answer only to a message sent at or after the time
// asked about, and only from a follower of the message's term (a log
// mismatch at that term counts: the follower followed it), on every path:
// a plain AppendEntries, a batched heartbeat and an urgent one.
func TestAckedSince(t *testing.T) {
	for _, tc := range []struct {
		name   string
		batch  time.Duration
		urgent bool
	}{{"direct", 0, false}, {"batched", 20 * time.Millisecond, false}, {"urgent", 20 * time.Millisecond, true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := func(c *Config) { c.HeartbeatBatch = tc.batch }
			a, b := newTestNode(t, "k", cfg), newTestNode(t, "k", cfg)
			ga, _ := a.Group(1)
			gb, _ := b.Group(1)
			var followerTerm atomic.Uint64
			var slow atomic.Bool
			answer := func(rpc raft.RPC) {
				if slow.Load() {
					time.Sleep(100 * time.Millisecond)
				}
				req := rpc.Command.(*raft.AppendEntriesRequest)
				term := followerTerm.Load()
				rpc.Respond(&raft.AppendEntriesResponse{Term: term, Success: term == req.Term && req.PrevLogEntry == 0}, nil)
			}
			gb.SetHeartbeatHandler(answer)
			go func() {
				for rpc := range gb.Consumer() {
					answer(rpc)
				}
			}()
			if tc.urgent {
				ga.Urgent()
			}
			send := func(term, prev uint64) {
				t.Helper()
				req := heartbeatReq(term)
				req.PrevLogEntry = prev // a heartbeat carries none; this one then goes unbatched
				var resp raft.AppendEntriesResponse
				if err := ga.AppendEntries("b", b.Addr(), req, &resp); err != nil {
					t.Fatal(err)
				}
			}
			followerTerm.Store(3)
			before := time.Now()
			// Sent before since, answered after it: the answer to an old
			// message, as a resumed leader finds in its socket.
			slow.Store(true)
			var since time.Time
			taken := make(chan struct{})
			go func() {
				time.Sleep(50 * time.Millisecond)
				since = time.Now()
				close(taken)
			}()
			send(3, 0)
			<-taken
			slow.Store(false)
			if ga.AckedSince(b.Addr(), 3, since) {
				t.Fatal("an answer to a message sent before since counted")
			}
			if !ga.AckedSince(b.Addr(), 3, before) {
				t.Fatal("an answer to a message sent after before did not count")
			}
			send(3, 0)
			if !ga.AckedSince(b.Addr(), 3, since) || ga.AckedSince(b.Addr(), 2, since) || ga.AckedSince(b.Addr(), 4, since) {
				t.Fatal("a fresh answer at term 3 counts for term 3 only")
			}
			// A log mismatch at the same term is an answer from a follower.
			mismatch := time.Now()
			send(3, 9)
			if !ga.AckedSince(b.Addr(), 3, mismatch) {
				t.Fatal("a same-term log mismatch did not count")
			}
			// A follower of a newer term answers, but not as our follower.
			followerTerm.Store(4)
			newer := time.Now()
			send(3, 0)
			if ga.AckedSince(b.Addr(), 3, newer) {
				t.Fatal("an answer from a follower of a newer term counted")
			}
		})
	}
}
