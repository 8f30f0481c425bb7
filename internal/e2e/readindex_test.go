package e2e

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// replicaOf returns node i's replica of channel (the test fails without one).
func replicaOf(t *testing.T, c *testcluster.Cluster, i int, channel string) *shard.Replica {
	t.Helper()
	rep, ok := c.Nodes[i].Agent().Node.Shards().ReplicaByChannel(channel)
	if !ok {
		t.Fatalf("%s hosts no replica of %s", c.Nodes[i].Name, channel)
	}
	return rep
}

// getString reads key through node i at level, with a deadline of its own.
func getString(c *testcluster.Cluster, i int, channel, key string, level api.Consistency, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b, _, err := c.Client(i).Get(ctx, channel, key, api.GetOptions{Consistency: level})
	return string(b), err
}

// hashicorp/raft applies entries to the leader's state machine
// asynchronously, so a follower can apply a committed entry before the
// leader's state machine does. A linearizable read served by that follower
// can then return the entry, and a read that starts after it returned and
// is served by the leader must return it too: the read index is the
// leader's commit index, and the leader waits for its own state machine
// like any follower. With the leader's state machine held back the leader
// can only wait (here, until the client gives up); it must never answer
// the older value.
func TestLeaderReadAfterFollowerApplied(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("back", 3)
	leader := c.Index(c.WaitLeader("back"))
	follower := (leader + 1) % 3
	ctx := ctxT(t)
	if _, err := c.Client(leader).Put(ctx, "back", "k", []byte("v1"), api.PutOptions{}); err != nil {
		t.Fatalf("put v1: %v", err)
	}
	// Both serve linearizable reads of v1 first: the leader's per-term
	// barrier is behind it (a barrier waits for the state machine).
	c.WaitFor(10*time.Second, func() error {
		for _, i := range []int{leader, follower} {
			if v, err := getString(c, i, "back", "k", api.Linearizable, 5*time.Second); err != nil || v != "v1" {
				return fmt.Errorf("read through %s: %q, %v", c.Nodes[i].Name, v, err)
			}
		}
		return nil
	})

	hold := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold) }) }
	lrep := replicaOf(t, c, leader, "back")
	lrep.FSM().SetApplyHook(func(first, last uint64) { <-hold })
	t.Cleanup(func() { release(); lrep.FSM().SetApplyHook(nil) })

	wrote := make(chan error, 1)
	go func() { // acknowledged only once the leader's state machine applied it
		_, err := c.Client(leader).Put(ctx, "back", "k", []byte("v2"), api.PutOptions{})
		wrote <- err
	}()
	// The follower applies v2 while the leader's state machine cannot.
	c.WaitFor(10*time.Second, func() error {
		if v, err := getString(c, follower, "back", "k", api.Stale, 5*time.Second); err != nil || v != "v2" {
			return fmt.Errorf("stale read through the follower: %q, %v", v, err)
		}
		return nil
	})
	if got := lrep.FSM().Applied(); got >= replicaOf(t, c, follower, "back").FSM().Applied() {
		t.Fatalf("the leader's state machine is at %d, not behind the follower's", got)
	}
	v, err := getString(c, follower, "back", "k", api.Linearizable, 5*time.Second)
	if err != nil || v != "v2" {
		t.Fatalf("linearizable read through the follower: %q, %v (want v2: it has applied it)", v, err)
	}
	// Started after the follower's read returned v2: v2, or no answer.
	for range 3 {
		v, err = getString(c, leader, "back", "k", api.Linearizable, 500*time.Millisecond)
		if err == nil && v != "v2" {
			t.Fatalf("linearizable read through the leader went back in time: %q after the follower answered v2", v)
		}
	}
	release()
	if err := <-wrote; err != nil {
		t.Fatalf("put v2: %v", err)
	}
	if v, err := getString(c, leader, "back", "k", api.Linearizable, 5*time.Second); err != nil || v != "v2" {
		t.Fatalf("read through the leader once released: %q, %v", v, err)
	}
}

// A counter incremented by one client with compare-and-set, as fast as it
// can, while other clients load the channel: a reader reads it through one
// node and, as soon as that returns, through another; the second read must
// never be older than the first, for every ordered pair of nodes. Run as is
// and with the leader's state machine held back: each of its apply batches
// waits until a follower has applied the batch, and 20 ms more, so that
// reads find followers ahead of the leader (on its own, a follower learns
// the commit index 50-100 ms after the leader has applied, CommitTimeout).
func TestReadsNeverGoBack(t *testing.T) {
	for _, slowLeader := range []bool{false, true} {
		name := "plain"
		if slowLeader {
			name = "leader-apply-delayed"
		}
		t.Run(name, func(t *testing.T) { readsNeverGoBack(t, slowLeader) })
	}
}

func readsNeverGoBack(t *testing.T, slowLeader bool) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("ctr", 3)
	leader := c.Index(c.WaitLeader("ctr"))
	putRetry(t, c, "ctr", "n", []byte("0"))
	if slowLeader {
		rep := replicaOf(t, c, leader, "ctr")
		f1 := replicaOf(t, c, (leader+1)%3, "ctr").FSM()
		f2 := replicaOf(t, c, (leader+2)%3, "ctr").FSM()
		rep.FSM().SetApplyHook(func(first, last uint64) {
			limit := time.Now().Add(time.Second) // bounded: a follower may be cut off
			for f1.Applied() < last && f2.Applied() < last && time.Now().Before(limit) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
		})
		t.Cleanup(func() { rep.FSM().SetApplyHook(nil) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// At least minRun; longer, up to maxRun, until enough happened (the
	// held-back leader makes every increment wait for a follower).
	const minRun, maxRun = 3 * time.Second, 10 * time.Second
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var increments atomic.Int64
	wg.Add(1)
	go func() { // the counter: read, then CAS the next value (bounded)
		defer wg.Done()
		cl := c.Client(leader)
		for increments.Load() < 20000 {
			select {
			case <-stop:
				return
			default:
			}
			b, idx, err := cl.Get(ctx, "ctr", "n", api.GetOptions{})
			if err != nil {
				continue
			}
			v, _ := strconv.ParseInt(string(b), 10, 64)
			cas := idx
			if _, err := cl.Put(ctx, "ctr", "n", []byte(strconv.FormatInt(v+1, 10)), api.PutOptions{CAS: &cas}); err == nil {
				increments.Add(1)
			}
		}
	}()
	for l := range 2 { // load: other keys, through every node
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = c.Client((l+i)%3).Put(ctx, "ctr", fmt.Sprintf("load/%d", i%64), []byte("x"), api.PutOptions{})
			}
		}()
	}
	var checked atomic.Int64
	var wentBack atomic.Int64
	for a := range 3 {
		for b := range 3 {
			if a == b {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ca, cb := c.Client(a), c.Client(b)
				for i := 0; i < 100000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					first, _, err := ca.Get(ctx, "ctr", "n", api.GetOptions{})
					if err != nil {
						continue
					}
					second, _, err := cb.Get(ctx, "ctr", "n", api.GetOptions{})
					if err != nil {
						continue
					}
					x, _ := strconv.ParseInt(string(first), 10, 64)
					y, _ := strconv.ParseInt(string(second), 10, 64)
					checked.Add(1)
					if y < x && wentBack.Add(1) <= 5 {
						t.Errorf("read through %s returned %d after a read through %s had returned %d",
							c.Nodes[b].Name, y, c.Nodes[a].Name, x)
					}
				}
			}()
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for run := true; run; {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		enough := increments.Load() >= 30 && checked.Load() >= 200
		run = ctx.Err() == nil && time.Since(start) < maxRun && (time.Since(start) < minRun || !enough)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d increments, %d read pairs checked, %d went back", increments.Load(), checked.Load(), wentBack.Load())
	if increments.Load() < 10 || checked.Load() < 100 {
		t.Fatalf("too little happened to prove anything: %d increments, %d pairs", increments.Load(), checked.Load())
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("ran out of time: %v", err)
	}
}

// A follower restarted (as kill -9 would) in an idle channel knows the
// commit index again at once: hashicorp/raft learns it from the leader's
// next append only, and the leader answers the appends of an idle group
// itself (transport/quiet.go, "Quiet appends") as long as nothing new
// would cross the wire. Such an answer trusts what the follower said over
// the session its node had then; a restarted node is reached over a new
// session, so the leader's next append goes on the wire. Before that rule
// the follower waited for the leader's next real append (up to 30 s):
// its linearizable reads went to the leader, its collection rounds and
// anti-entropy were skipped. The write just before the kill makes that
// wait the longest.
func TestRestartedFollowerLearnsTheCommitIndexAtOnce(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("idle", 3)
	leader := c.Index(c.WaitLeader("idle"))
	follower := (leader + 1) % 3
	ctx := ctxT(t)
	if _, err := c.Client(leader).Put(ctx, "idle", "k", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	idx := replicaOf(t, c, leader, "idle").Raft().CommitIndex()
	c.WaitFor(10*time.Second, func() error {
		if got := replicaOf(t, c, follower, "idle").Raft().CommitIndex(); got < idx {
			return fmt.Errorf("the follower's commit index is %d, want %d", got, idx)
		}
		return nil
	})
	// Idle long enough for the group's pipelines to park and its
	// heartbeats to go quiet (transport/quiet.go), as an idle channel's do.
	time.Sleep(12 * time.Second)
	c.Kill(follower)
	c.Start(follower)
	var rep *shard.Replica
	c.WaitFor(30*time.Second, func() error {
		r, ok := c.Nodes[follower].Agent().Node.Shards().ReplicaByChannel("idle")
		if !ok {
			return fmt.Errorf("%s has not opened its replica yet", c.Nodes[follower].Name)
		}
		rep = r
		return nil
	})
	opened := time.Now()
	limit := testcluster.Scaled(8 * time.Second)
	for rep.Raft().CommitIndex() < idx || rep.FSM().Applied() < idx {
		if time.Since(opened) > limit {
			t.Fatalf("the restarted follower knows commit index %d and applied %d, %v after it opened; the write before the kill is at %d",
				rep.Raft().CommitIndex(), rep.FSM().Applied(), time.Since(opened), idx)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the restarted follower applied the last write %v after it opened", time.Since(opened).Round(time.Millisecond))
	if v, err := getString(c, follower, "idle", "k", api.Linearizable, 10*time.Second); err != nil || v != "v" {
		t.Fatalf("linearizable read through the restarted follower: %q, %v", v, err)
	}
}
