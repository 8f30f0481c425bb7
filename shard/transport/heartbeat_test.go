package transport

import (
	"strings"
	"sync"
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
