package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// placedOn lists the channels whose placement names node.
func placedOn(t *testing.T, c *testcluster.Cluster, from int, node string) ([]string, error) {
	t.Helper()
	chs, err := c.Client(from).Channels(context.Background())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ch := range chs {
		for _, r := range ch.Placement {
			if r.NodeID == node {
				out = append(out, ch.Name)
			}
		}
	}
	return out, nil
}

// placementsWhole checks that every channel has want replicas, none on
// the nodes in gone.
func placementsWhole(c *testcluster.Cluster, from, want int, gone ...string) error {
	chs, err := c.Client(from).Channels(context.Background())
	if err != nil {
		return err
	}
	for _, ch := range chs {
		if len(ch.Placement) != want {
			return fmt.Errorf("channel %s has %d replicas placed, want %d", ch.Name, len(ch.Placement), want)
		}
		for _, r := range ch.Placement {
			if slices.Contains(gone, r.NodeID) {
				return fmt.Errorf("channel %s is still placed on %s", ch.Name, r.NodeID)
			}
		}
	}
	return nil
}

// A node that dies has its replicas re-placed on the live nodes by the meta
// leader, within seconds; the dead node's description shows none left; a
// live node cannot be removed; the dead one can, and the registry drops it.
func TestRepairReplacesADeadNodesReplicas(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 3, DeadAfter: 3 * time.Second})
	for i := range 6 {
		c.CreateChannel(fmt.Sprintf("r%d", i), 3)
	}
	victim := c.Index("res1")
	held, err := placedOn(t, c, 0, "res1")
	if err != nil || len(held) == 0 {
		t.Fatalf("res1 holds %v (%v); the test needs it to hold replicas", held, err)
	}
	killed := time.Now()
	c.Kill(victim)
	c.WaitFor(30*time.Second, func() error { return placementsWhole(c, 0, 3, "res1") })
	t.Logf("%d channels re-placed off the dead node %v after the kill", len(held), time.Since(killed).Round(time.Millisecond))
	ctx := context.Background()
	nd, err := c.Client(0).Node(ctx, "res1")
	if err != nil || nd.State != "dead" || nd.ReplicasLeft != 0 {
		t.Fatalf("dead node: %+v, %v", nd, err)
	}
	// A live node is not removed, and says why.
	_, err = c.Client(1).RemoveNode(ctx, "res2")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != api.CodeNodeState {
		t.Fatalf("remove of a live node: %v", err)
	}
	out, err := c.Client(1).RemoveNode(ctx, "res1")
	if err != nil || out.ID != "res1" || out.MetaVoteRemoved {
		t.Fatalf("remove of the dead node: %+v, %v", out, err)
	}
	// Every node's copy of the registry loses it (each node answers from
	// its own copy, which may trail the meta leader's by a moment).
	c.WaitFor(10*time.Second, func() error {
		for i := range 3 {
			ns, err := c.Client(i).Nodes(ctx)
			if err != nil {
				return err
			}
			for _, n := range ns {
				if n.ID == "res1" {
					return fmt.Errorf("res1 still in node %d's registry: %s", i, n.State)
				}
			}
			if _, err := c.Client(i).Node(ctx, "res1"); !api.IsNotFound(err) {
				return fmt.Errorf("removed node through node %d: %v", i, err)
			}
		}
		return nil
	})
}

// A drained node holds nothing, is refused nothing by leave; a node that
// holds replicas is refused leave with the count; a drain of a dead node
// is refused; a cancelled drain makes the node alive again.
func TestDrainThenLeave(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2})
	for i := range 4 {
		c.CreateChannel(fmt.Sprintf("d%d", i), 3)
	}
	ctx := context.Background()
	var ae *api.Error
	if err := c.Client(0).LeaveNode(ctx, "res1"); !errors.As(err, &ae) || ae.Code != api.CodeNodeState {
		t.Fatalf("leave of a node holding replicas: %v", err)
	} else {
		t.Logf("refused: %s", ae.Message)
	}
	nd, err := c.Client(2).DrainNode(ctx, "res1")
	if err != nil || nd.State != "draining" {
		t.Fatalf("drain: %+v, %v", nd, err)
	}
	c.WaitFor(30*time.Second, func() error {
		nd, err := c.Client(0).Node(ctx, "res1")
		if err != nil {
			return err
		}
		if !nd.Drained {
			return fmt.Errorf("res1: %d replicas left (%v), state %s, blocked %v", nd.ReplicasLeft, nd.Channels, nd.State, nd.Blocked)
		}
		return nil
	})
	if err := placementsWhole(c, 0, 3, "res1"); err != nil {
		t.Fatal(err)
	}
	a := c.Nodes[c.Index("res1")].Agent()
	// A forward with too little time left for the record is answered
	// not_ready while the caller listens, not left to end in a timeout
	// that cannot be told from a leave under way; nothing changes.
	anonymous := access.WithProof(ctx, access.Proof{Kind: access.ProofAnonymous}) // the cluster runs without auth
	short, cancel := context.WithTimeout(anonymous, 500*time.Millisecond)
	err = c.Nodes[0].Agent().Node.LeaveNode(short, "res1")
	cancel()
	if !errors.Is(err, cluster.ErrNotReady) {
		t.Fatalf("leave forwarded with 500ms left: %v, want not ready", err)
	}
	if nd, err := c.Client(0).Node(ctx, "res1"); err != nil || nd.State != "draining" {
		t.Fatalf("after a leave answered not ready: %+v, %v", nd, err)
	}
	// A leave waits for the meta leader to record it; on a loaded machine
	// that can outlast the wait (503 not_ready) or, the answer lost, the
	// request (503 timeout): a leave is idempotent, so a client sends it
	// again (docs/api.md), as this one does. Anything else fails.
	leaveAt := time.Now()
	c.WaitFor(60*time.Second, func() error {
		err := c.Client(0).LeaveNode(ctx, "res1")
		if err != nil && !api.IsRetryable(err) && !api.IsTimeout(err) {
			t.Fatalf("leave of a drained node: %v", err)
		}
		if err != nil {
			t.Logf("leave after %v: %v", time.Since(leaveAt).Round(time.Millisecond), err)
		}
		return err
	})
	t.Logf("res1 left in %v", time.Since(leaveAt).Round(time.Millisecond))
	select {
	case <-a.Node.Leaving():
	case <-time.After(5 * time.Second):
		t.Fatal("the drained node did not agree to leave")
	}
	c.Stop(c.Index("res1")) // what the agent process does on Leaving
	c.WaitFor(20*time.Second, func() error {
		nd, err := c.Client(0).Node(ctx, "res1")
		if err != nil {
			return err
		}
		if nd.State != "left" {
			return fmt.Errorf("res1 is %s, want left", nd.State)
		}
		return nil
	})
	if _, err := c.Client(0).DrainNode(ctx, "res1"); !errors.As(err, &ae) || ae.Code != api.CodeNodeState {
		t.Fatalf("drain of a left node: %v", err)
	}
	// A cancelled drain: the node is alive again (what moved stays moved).
	if _, err := c.Client(1).DrainNode(ctx, "core3"); err != nil {
		t.Fatal(err)
	}
	if nd, err := c.Client(2).CancelDrain(ctx, "core3"); err != nil || nd.State != "alive" {
		t.Fatalf("cancel: %+v, %v", nd, err)
	}
}

// A dead core node is removed with its meta vote: its replicas are placed
// elsewhere by repair, the meta group's configuration drops it, and a
// channel created afterwards works.
func TestRemoveDeadCoreNode(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2, DeadAfter: 2 * time.Second})
	c.CreateChannel("before", 3)
	c.Kill(c.Index("core3"))
	ctx := context.Background()
	c.WaitFor(30*time.Second, func() error {
		nd, err := c.Client(0).Node(ctx, "core3")
		if err != nil {
			return err
		}
		if nd.State != "dead" || nd.ReplicasLeft != 0 {
			return fmt.Errorf("core3 is %s with %d replicas left", nd.State, nd.ReplicasLeft)
		}
		return nil
	})
	out, err := c.Client(1).RemoveNode(ctx, "core3")
	if err != nil || !out.MetaVoteRemoved {
		t.Fatalf("remove: %+v, %v", out, err)
	}
	c.WaitFor(10*time.Second, func() error {
		_, _, conf := c.Nodes[0].Agent().Node.MetaRaft()
		for _, s := range conf.Servers {
			if strings.HasPrefix(string(s.ID), "core3") {
				return fmt.Errorf("core3 still in the meta configuration: %+v", conf.Servers)
			}
		}
		return nil
	})
	c.CreateChannel("after", 3)
	if err := placementsWhole(c, 0, 3, "core3"); err != nil {
		t.Fatal(err)
	}
}
