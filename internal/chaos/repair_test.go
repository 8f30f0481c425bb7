package chaos

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// Automatic repair and drain (cluster/DESIGN.md "Repair and drain") under
// a steady load checked by porcupine.

// repairChannels is how many channels the repair scenario creates: the
// issue asks for 20; on two shared cores 20 groups of three with the load
// and the checker stay within the test's minute.
const repairChannels = 20

// channelsOn lists the channels placed on node, by name.
func channelsOn(t *testing.T, c *testcluster.Cluster, node string) []api.Channel {
	t.Helper()
	var chs []api.Channel
	c.WaitFor(10*time.Second, func() error {
		var err error
		chs, err = c.Client(runningNode(c)).Channels(context.Background())
		return err
	})
	var out []api.Channel
	for _, ch := range chs {
		if slices.Contains(placedIDs(ch), node) {
			out = append(out, ch)
		}
	}
	return out
}

// A node is hard-stopped under load: every channel it held is back to
// three voters on live nodes within 30 s, no acknowledged write is lost;
// restarted, the node deletes its stale replicas.
func TestRepairUnderLoad(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 3, LeaderRebalance: -1, DeadAfter: 3 * time.Second})
	for i := range repairChannels {
		c.CreateChannel(fmt.Sprintf("c%02d", i), 3)
	}
	const victim = "res1"
	held := channelsOn(t, c, victim)
	if len(held) < 2 {
		t.Fatalf("%s holds %d channels; the test loads two of them", victim, len(held))
	}
	stops := []func(){runLoad(t, c, held[0].Name), runLoad(t, c, held[1].Name)}
	time.Sleep(time.Second) // some history before the kill

	killed := time.Now()
	c.Kill(c.Index(victim))
	for _, ch := range held {
		// waitConverged: exactly the placement's voters, every placed
		// replica with the leader's configuration.
		got := waitConverged(t, c, ch.Name, ch.Placement, 30*time.Second)
		if slices.Contains(placedIDs(got), victim) || len(got.Placement) != 3 {
			t.Fatalf("%s: placement %v after the repair", ch.Name, placedIDs(got))
		}
	}
	t.Logf("%d channels of %d back to 3 voters on live nodes %v after the kill of %s",
		len(held), repairChannels, time.Since(killed).Round(100*time.Millisecond), victim)

	c.Start(c.Index(victim))
	c.WaitFor(30*time.Second, func() error {
		a := c.Nodes[c.Index(victim)].Agent()
		if a == nil {
			return fmt.Errorf("%s not running", victim)
		}
		for _, ch := range held {
			if _, ok := a.Node.Shards().Replica(ch.GroupID); ok {
				return fmt.Errorf("%s still hosts its stale replica of %s", victim, ch.Name)
			}
		}
		return nil
	})
	for _, stop := range stops {
		stop()
	}
}

// A node is drained under load: every replica moves off it, each group
// converges to its new placement, no acknowledged write is lost; then the
// node leaves.
func TestDrainUnderLoad(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2, LeaderRebalance: -1})
	for i := range 6 {
		c.CreateChannel(fmt.Sprintf("d%d", i), 3)
	}
	const drained = "res1"
	held := channelsOn(t, c, drained)
	if len(held) == 0 {
		t.Fatalf("%s holds no channel", drained)
	}
	stop := runLoad(t, c, held[0].Name)
	time.Sleep(time.Second)

	ctx := context.Background()
	start := time.Now()
	c.WaitFor(10*time.Second, func() error {
		_, err := c.Client(runningNode(c)).DrainNode(ctx, drained)
		return err
	})
	c.WaitFor(60*time.Second, func() error {
		nd, err := c.Client(runningNode(c)).Node(ctx, drained)
		if err != nil {
			return err
		}
		if !nd.Drained {
			return fmt.Errorf("%d replicas left on %s (%v), blocked %v", nd.ReplicasLeft, drained, nd.Channels, nd.Blocked)
		}
		return nil
	})
	for _, ch := range held {
		waitConverged(t, c, ch.Name, ch.Placement, 30*time.Second)
	}
	t.Logf("%d channels drained off %s in %v", len(held), drained, time.Since(start).Round(100*time.Millisecond))
	stop()
	// A leave waits for the meta leader to record it; on a loaded machine
	// that can outlast the wait (503 not_ready) or, the answer lost, the
	// request (503 timeout): a leave is idempotent, so a client sends it
	// again (docs/api.md), as this one does. Anything else fails.
	leaveAt := time.Now()
	c.WaitFor(60*time.Second, func() error {
		err := c.Client(0).LeaveNode(ctx, drained)
		if err != nil && !api.IsRetryable(err) && !api.IsTimeout(err) {
			t.Fatalf("leave of the drained node (after %v): %v", time.Since(leaveAt).Round(time.Millisecond), err)
		}
		return err
	})
	t.Logf("%s left in %v", drained, time.Since(leaveAt).Round(time.Millisecond))
}
