package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// cutProxy relays connections on loopback to target (host:port) and cuts
// each one, both ways, when the first byte of the answer arrives: the
// request reached the node and was served, and the client never hears
// how. It returns the proxy's address and how many answers it cut.
func cutProxy(t *testing.T, target string) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	cut := 0
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(out, in) }()
				var one [1]byte
				_ = out.SetReadDeadline(time.Now().Add(30 * time.Second))
				if n, _ := out.Read(one[:]); n == 1 {
					mu.Lock()
					cut++
					mu.Unlock()
				}
				// Closing in without writing: a reset, or EOF, for the client.
				if tc, ok := in.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			}()
		}
	}()
	return l.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return cut }
}

// lostWrite sends a CAS write under ctx's idempotency key to node i of c
// through a cutting proxy: it is served and its answer lost. Keep-alives
// are off so that net/http never resends it on a reused connection by
// itself.
func lostWrite(t *testing.T, c *testcluster.Cluster, i int, ctx context.Context, key string, value []byte, cas uint64) {
	t.Helper()
	addr, cut := cutProxy(t, strings.TrimPrefix(c.Nodes[i].URL(), "http://"))
	cl := api.NewClient("http://"+addr, "", &http.Client{Transport: &http.Transport{DisableKeepAlives: true}})
	_, err := cl.Put(ctx, "idem", key, value, api.PutOptions{CAS: &cas})
	if err == nil || api.AsError(err) != nil {
		t.Fatalf("a write whose answer was cut: %v, want a lost connection", err)
	}
	if cut() != 1 {
		t.Fatalf("the proxy cut %d answers, want 1 (the node never answered?): %v", cut(), err)
	}
}

// retryWrite sends the write again under its key through node i (retrying
// only answers that say nothing was applied, as leadership settles) and
// returns its index.
func retryWrite(t *testing.T, c *testcluster.Cluster, i int, ctx context.Context, key string, value []byte, cas uint64) uint64 {
	t.Helper()
	var idx uint64
	c.WaitFor(30*time.Second, func() error {
		var err error
		idx, err = c.Client(i).Put(ctx, "idem", key, value, api.PutOptions{CAS: &cas})
		if err != nil && !api.IsRetryable(err) && api.AsError(err) != nil {
			t.Fatalf("retry of %q through %s: %v (a second application would be a cas mismatch)", key, c.Nodes[i].Name, err)
		}
		return err
	})
	return idx
}

// checkOnce fails unless key holds value, written by exactly the entry at
// idx: a second application of the write would have failed its CAS or
// moved the modify index.
func checkOnce(t *testing.T, c *testcluster.Cluster, i int, key string, value []byte, idx uint64) {
	t.Helper()
	var got []byte
	var modify uint64
	c.WaitFor(20*time.Second, func() error {
		var err error
		got, modify, err = c.Client(i).Get(context.Background(), "idem", key, api.GetOptions{})
		return err
	})
	if string(got) != string(value) || modify != idx {
		t.Fatalf("%s = %q at modify index %d; want %q written once, at %d", key, got, modify, value, idx)
	}
}

// waitApplied waits until every running replica of idem applied idx.
func waitApplied(t *testing.T, c *testcluster.Cluster, idx uint64) {
	t.Helper()
	c.WaitFor(20*time.Second, func() error {
		for i, nd := range c.Nodes {
			if nd.Agent() == nil {
				continue
			}
			if a := replicaOf(t, c, i, "idem").FSM().Applied(); a < idx {
				return fmt.Errorf("%s applied %d, want %d", nd.Name, a, idx)
			}
		}
		return nil
	})
}

// TestIdempotentRetryAfterLostAnswer: a CAS write is served and its answer
// lost (the client's connection is cut once the node answers); the retry
// under the same Idempotency-Key answers the first write's index and
// applies nothing — through another node, after the channel's leadership
// moved between the attempts, and after every node restarted with its
// channel state rebuilt from a snapshot.
func TestIdempotentRetryAfterLostAnswer(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, HashCheckInterval: -1})
	c.WaitFor(30*time.Second, func() error {
		for i := range c.Nodes {
			st, err := c.Client(i).Status(context.Background())
			if err != nil || st.ClusterVersion < fsm.Version {
				return fmt.Errorf("%s: cluster version %d, %v", c.Nodes[i].Name, st.ClusterVersion, err)
			}
		}
		return nil
	})
	c.CreateChannel("idem", 3)
	leader := c.Index(c.WaitLeader("idem"))
	other := (leader + 1) % len(c.Nodes)

	// 0. Attempts in flight together, through every node: each goes
	// through the log, and all but the first find its record.
	t.Log("0: attempts of one write in flight together")
	base0 := putRetry(t, c, "idem", "y", []byte("0"))
	k0 := api.WithIdempotencyKey(context.Background(), "write-0")
	var wg sync.WaitGroup
	answers := make([]uint64, 2*len(c.Nodes))
	errs := make([]error, len(answers))
	for a := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[a], errs[a] = c.Client(a%len(c.Nodes)).Put(k0, "idem", "y", []byte("1"), api.PutOptions{CAS: &base0})
		}()
	}
	wg.Wait()
	for a := range answers {
		if errs[a] != nil || answers[a] != answers[0] {
			t.Fatalf("attempt %d: index %d, %v; attempt 0: index %d", a, answers[a], errs[a], answers[0])
		}
	}
	checkOnce(t, c, leader, "y", []byte("1"), answers[0])

	// 1. The answer is lost; the retry goes to another node.
	t.Log("1: a lost answer, retried through another node")
	base := putRetry(t, c, "idem", "x", []byte("0"))
	k1 := api.WithIdempotencyKey(context.Background(), "write-1")
	lostWrite(t, c, leader, k1, "x", []byte("1"), base)
	idx1 := retryWrite(t, c, other, k1, "x", []byte("1"), base)
	if idx1 <= base {
		t.Fatalf("retry answered index %d, not after the base write at %d", idx1, base)
	}
	checkOnce(t, c, other, "x", []byte("1"), idx1)
	// The key is the write's: another write under it is refused, through
	// the leader and through a node whose call carries the outcome back.
	for _, via := range []int{leader, other} {
		_, err := c.Client(via).Put(k1, "idem", "x", []byte("other"), api.PutOptions{})
		if e := api.AsError(err); e == nil || e.Status != 422 || e.Code != api.CodeIdempotencyKeyReused {
			t.Fatalf("another write under write-1 through node %d: %v, want 422 idempotency_key_reused", via, err)
		}
	}

	// 2. Leadership moves between the attempts.
	t.Log("2: a lost answer, retried after a leadership transfer")
	k2 := api.WithIdempotencyKey(context.Background(), "write-2")
	lostWrite(t, c, leader, k2, "x", []byte("2"), idx1)
	oldLeader := c.Nodes[leader].Name
	if err := replicaOf(t, c, leader, "idem").Raft().LeadershipTransfer().Error(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	c.WaitFor(20*time.Second, func() error {
		for i := range c.Nodes {
			if i != leader && replicaOf(t, c, i, "idem").Raft().State() == raft.Leader {
				return nil
			}
		}
		return errors.New("no other leader yet")
	})
	// Through the old leader, which now hands the write to the new one.
	idx2 := retryWrite(t, c, leader, k2, "x", []byte("2"), idx1)
	checkOnce(t, c, leader, "x", []byte("2"), idx2)
	if newLeader := c.WaitLeader("idem"); newLeader == oldLeader {
		t.Fatalf("the leader is still %s", oldLeader)
	}

	// 3. Every node restarts with its channel state rebuilt from a
	// snapshot taken after the lost write: the record came with it.
	t.Log("3: a lost answer, retried after every node restarted from a snapshot")
	k3 := api.WithIdempotencyKey(context.Background(), "write-3")
	leader = c.Index(c.WaitLeader("idem"))
	lostWrite(t, c, leader, k3, "x", []byte("3"), idx2)
	_, applied, err := c.Client(leader).Get(context.Background(), "idem", "x", api.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, applied)
	for i := range c.Nodes {
		if err := replicaOf(t, c, i, "idem").Raft().Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on %s: %v", c.Nodes[i].Name, err)
		}
	}
	for i := range c.Nodes {
		c.Stop(i)
	}
	for i := range c.Nodes {
		// The channel state, not the Raft logs or snapshots: each replica
		// restores its snapshot at start (shard restoreIfBehind).
		removeStateDB(t, c.Nodes[i].Dir)
	}
	for i := range c.Nodes {
		c.Start(i)
	}
	leader = c.Index(c.WaitLeader("idem"))
	idx3 := retryWrite(t, c, (leader+2)%len(c.Nodes), k3, "x", []byte("3"), idx2)
	if idx3 != applied {
		t.Fatalf("retry after the restart answered index %d, the lost write was applied at %d", idx3, applied)
	}
	checkOnce(t, c, leader, "x", []byte("3"), idx3)
	c.Close()
}

// removeStateDB deletes the channel state DB under a node's data dir
// (the directory "state" beside "raftlog").
func removeStateDB(t *testing.T, dir string) {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "state" {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), "raftlog")); err == nil {
				found = append(found, p)
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil || len(found) != 1 {
		t.Fatalf("state DB under %s: %v, %v", dir, found, err)
	}
	if err := os.RemoveAll(found[0]); err != nil {
		t.Fatal(err)
	}
}
