package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// A channel leader's node stops answering without closing a connection (as
// SIGSTOP looks to its peers): 8 clients reading through the two survivors,
// each read with a 2 s deadline, all succeed again within a few seconds and
// keep succeeding. A follower's read-index call goes to the leader its
// replica knows now, not to the one a first read found, and a read waiting
// on a leader that stopped answering moves on once another is elected.
func TestFollowerReadsAfterLeaderFrozen(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Faults: true})
	c.CreateChannel("frozen", 3)
	leader := c.Index(c.WaitLeader("frozen"))
	putRetry(t, c, "frozen", "k", []byte("v"))
	survivors := []int{(leader + 1) % 3, (leader + 2) % 3}
	c.WaitFor(10*time.Second, func() error {
		for _, i := range survivors {
			if v, err := getString(c, i, "frozen", "k", api.Linearizable, 2*time.Second); err != nil || v != "v" {
				return fmt.Errorf("read through %s: %q, %v", c.Nodes[i].Name, v, err)
			}
		}
		return nil
	})

	const (
		recovery = 5 * time.Second  // reads must all succeed from then on
		runFor   = 12 * time.Second // after the freeze
	)
	frozenAt := time.Now()
	c.Freeze(leader)
	t.Cleanup(func() { c.Thaw(leader) }) // before the cluster closes
	type outcome struct {
		node     int
		at, took time.Duration
		err      error
	}
	var mu sync.Mutex
	var failedLate []outcome
	lastFailure := map[int]time.Duration{}
	failedEarly := map[int]int{}
	lateOK := map[int]int{}
	var wg sync.WaitGroup
	for k := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := survivors[k%2]
			for time.Since(frozenAt) < runFor {
				start := time.Since(frozenAt)
				v, err := getString(c, i, "frozen", "k", api.Linearizable, 2*time.Second)
				if err == nil && v != "v" {
					err = fmt.Errorf("read %q", v)
				}
				mu.Lock()
				switch {
				case err != nil && start >= recovery:
					failedLate = append(failedLate, outcome{i, start, time.Since(frozenAt) - start, err})
				case err != nil:
					failedEarly[i]++
					lastFailure[i] = max(lastFailure[i], start)
				case start >= recovery:
					lateOK[i]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, i := range survivors {
		t.Logf("through %s: %d reads failed, the last one started %v after the freeze; %d reads succeeded after %v",
			c.Nodes[i].Name, failedEarly[i], lastFailure[i].Round(time.Millisecond), lateOK[i], recovery)
		if lateOK[i] == 0 {
			t.Errorf("no read through %s succeeded in the %v after %v", c.Nodes[i].Name, runFor-recovery, recovery)
		}
	}
	for n, o := range failedLate {
		if n == 5 {
			t.Errorf("... %d failed reads in all", len(failedLate))
			break
		}
		t.Errorf("read through %s started %v after the freeze failed after %v: %v",
			c.Nodes[o.node].Name, o.at.Round(time.Millisecond), o.took.Round(time.Millisecond), o.err)
	}
}

// A channel leader's node is killed: once a new leader is elected, a read
// through a node that hosts no replica of the channel (and whose leader
// hint still names the dead node) succeeds, re-resolving the leader rather
// than answering "cannot reach the node to forward to".
func TestReadThroughNonReplicaAfterLeaderKilled(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2})
	ctx := ctxT(t)
	if _, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "fwd", Nodes: []string{"res1", "res2", "core3"}}); err != nil {
		t.Fatal(err)
	}
	leaderName := c.WaitLeader("fwd")
	leader := c.Index(leaderName)
	putRetry(t, c, "fwd", "k", []byte("v"))
	outside := []int{c.Index("core1"), c.Index("core2")} // host no replica of fwd
	// They forward to the leader and remember it.
	c.WaitFor(10*time.Second, func() error {
		for _, i := range outside {
			if v, err := getString(c, i, "fwd", "k", api.Linearizable, 2*time.Second); err != nil || v != "v" {
				return fmt.Errorf("read through %s: %q, %v", c.Nodes[i].Name, v, err)
			}
		}
		return nil
	})
	killedAt := time.Now()
	c.Kill(leader)
	var replicas []int
	for _, name := range []string{"res1", "res2", "core3"} {
		if i := c.Index(name); i != leader {
			replicas = append(replicas, i)
		}
	}
	c.WaitFor(10*time.Second, func() error {
		for _, i := range replicas {
			rep, ok := c.Nodes[i].Agent().Node.Shards().ReplicaByChannel("fwd")
			if ok && rep.Raft().State() == raft.Leader {
				return nil
			}
		}
		return fmt.Errorf("no new leader of fwd yet")
	})
	t.Logf("a new leader %v after the kill of %s", time.Since(killedAt).Round(time.Millisecond), leaderName)
	for round := range 5 {
		for _, i := range outside {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			v, _, err := c.Client(i).Get(rctx, "fwd", "k", api.GetOptions{})
			cancel()
			if err != nil || string(v) != "v" {
				t.Fatalf("read %d through %s (no replica) %v after the kill: %q, %v",
					round, c.Nodes[i].Name, time.Since(killedAt).Round(time.Millisecond), v, err)
			}
		}
	}
}
