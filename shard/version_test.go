package shard

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/transport"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestClusterVersionGatesProposals: below cluster version 2 a hash check
// proposal is refused with ErrUpgradePending (nothing proposed) and the
// leader's hash-check loop proposes none, saying so once; older commands go
// through. Once the version is 2, the loop proposes checks.
func TestClusterVersionGatesProposals(t *testing.T) {
	tr, err := transport.New(transport.Config{BindAddr: "127.0.0.1:0", ClusterKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var version atomic.Int64
	version.Store(1)
	var logs lockedBuffer
	m, err := Open(Config{DataDir: t.TempDir(), NodeID: "n1", ServerID: ServerIDFor("n1", "1"), Transport: tr, Raft: fastTiming(),
		HashCheckInterval: 50 * time.Millisecond, ClusterVersion: func() int { return int(version.Load()) },
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Ensure(ReplicaSpec{GroupID: 1, Channel: "c", Peers: []raft.Server{{Suffrage: raft.Voter, ID: ServerIDFor("n1", "1"), Address: tr.Addr()}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		if r.Raft().State() != raft.Leader {
			return errors.New("no leader yet")
		}
		return nil
	})
	put, _ := fsm.Encode(&fsm.Put{Key: []byte("k"), Value: []byte("v")})
	if _, err := r.Propose(context.Background(), put); err != nil {
		t.Fatalf("a version 1 command: %v", err)
	}
	check, _ := fsm.Encode(&fsm.HashCheck{})
	last := r.Raft().LastIndex()
	_, err = r.Propose(context.Background(), check)
	if !errors.Is(err, fsm.ErrUpgradePending) || err.Error() != "shard: command needs cluster version 2, the cluster runs 1: finish upgrading every node" {
		t.Fatalf("a hash check at cluster version 1: %v", err)
	}
	waitFor(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "no hash checks until every node is upgraded") {
			return errors.New("the hash-check loop has not said it waits")
		}
		return nil
	})
	if n := testutil.ToFloat64(m.metrics.hashChecks); n != 0 || r.Raft().LastIndex() != last {
		t.Fatalf("%v hash checks proposed at cluster version 1; last index %d, was %d", n, r.Raft().LastIndex(), last)
	}
	version.Store(2)
	waitFor(t, 10*time.Second, func() error {
		if testutil.ToFloat64(m.metrics.hashChecks) < 1 {
			return errors.New("no hash check proposed at cluster version 2")
		}
		return nil
	})
	if n := strings.Count(logs.String(), "no hash checks until every node is upgraded"); n != 1 {
		t.Fatalf("the wait was logged %d times, want once", n)
	}

	// A write under an idempotency key needs version 3.
	keyed, err := fsm.Encode(&fsm.Idempotent{Key: []byte("k"), Window: 10, Cmd: &fsm.Put{Key: []byte("k"), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Propose(context.Background(), keyed); !errors.Is(err, fsm.ErrUpgradePending) {
		t.Fatalf("a keyed write at cluster version 2: %v, want ErrUpgradePending", err)
	}
	version.Store(3)
	if res, err := r.Propose(context.Background(), keyed); err != nil || res.Err != nil {
		t.Fatalf("a keyed write at cluster version 3: %+v, %v", res, err)
	}
}
