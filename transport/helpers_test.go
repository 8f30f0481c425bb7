package transport

import (
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// testLogger is silent unless TRANSPORT_TEST_LOG is set (to a level).
func testLogger(name string) hclog.Logger {
	lvl := os.Getenv("TRANSPORT_TEST_LOG")
	if lvl == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(lvl)})
}

type testNode struct {
	*Node
	reg *prometheus.Registry
}

// newTestNode starts a Node on a free loopback port, closed at test end.
func newTestNode(t testing.TB, key string, edit ...func(*Config)) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		BindAddr:   "127.0.0.1:0",
		ClusterKey: []byte(key),
		Logger:     testLogger("node"),
		Registerer: reg,
	}
	for _, e := range edit {
		e(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return &testNode{Node: n, reg: reg}
}

// metric sums the samples of a metric family (all label values).
func (n *testNode) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// scaled stretches a deadline for slow, shared CI machines and -race.
func scaled(d time.Duration) time.Duration {
	if raceEnabled {
		return 3 * d
	}
	return d
}

// waitFor polls cond until it holds or the (scaled) timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(scaled(timeout))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", scaled(timeout), what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serve answers g's consumer with handle until the test ends.
func serve(t testing.TB, g *GroupTransport, handle func(rpc raft.RPC)) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case rpc := <-g.Consumer():
				handle(rpc)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// echoHandler answers every RPC with a canned success response carrying
// the request's term.
func echoHandler(rpc raft.RPC) {
	switch c := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		var last uint64
		if n := len(c.Entries); n > 0 {
			last = c.Entries[n-1].Index
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, LastLog: last, Success: true}, nil)
	case *raft.RequestVoteRequest:
		rpc.Respond(&raft.RequestVoteResponse{Term: c.Term, Granted: true}, nil)
	case *raft.RequestPreVoteRequest:
		rpc.Respond(&raft.RequestPreVoteResponse{Term: c.Term, Granted: true}, nil)
	case *raft.TimeoutNowRequest:
		rpc.Respond(&raft.TimeoutNowResponse{}, nil)
	case *raft.InstallSnapshotRequest:
		rpc.Respond(&raft.InstallSnapshotResponse{Term: c.Term, Success: true}, nil)
	}
}

func heartbeatReq(term uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte("x")},
		Term:      term,
	}
}
