package e2e

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestRecoverChannelAfterLosingAQuorum: a channel whose 2 of 3 replicas
// are destroyed is re-formed from the survivor (a new group, the lost
// nodes left out), keeps every acknowledged write and serves writes above
// its old indexes; the destroyed nodes, brought back with their old data,
// neither vote in it nor lead it, and their old replicas are removed.
func TestRecoverChannelAfterLosingAQuorum(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 3})
	ctx := ctxT(t)
	pins := []string{c.Nodes[3].Name, c.Nodes[4].Name, c.Nodes[5].Name}
	var ch api.Channel
	c.WaitFor(30*time.Second, func() (err error) {
		ch, err = c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "rc", Nodes: pins})
		return err
	})
	c.WaitLeader("rc")
	var last uint64
	for i := range 100 {
		idx, err := c.Client(0).Put(ctx, "rc", fmt.Sprintf("k%03d", i), []byte("v"), api.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = idx
	}
	// Every replica has every write, so any survivor holds them.
	c.WaitFor(10*time.Second, func() error {
		for _, i := range []int{3, 4, 5} {
			if a := replicaOf(t, c, i, "rc").FSM().Applied(); a < last {
				return fmt.Errorf("%s applied %d of %d", c.Nodes[i].Name, a, last)
			}
		}
		return nil
	})
	// Not confirmed: refused while a quorum answers.
	if _, err := c.Client(0).RecoverChannel(ctx, "rc", "i-understand-data-loss"); !isStatus(err, 400) {
		t.Fatalf("recover with a quorum: %v, want 400", err)
	}
	c.Kill(4)
	c.Kill(5)
	res, err := c.Client(0).RecoverChannel(ctx, "rc", "yes")
	if !isStatus(err, 400) {
		t.Fatalf("recover without the confirmation: %+v, %v", res, err)
	}
	res, err = c.Client(0).RecoverChannel(ctx, "rc", "i-understand-data-loss")
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if res.Survivor != c.Nodes[3].Name || res.OldGroupID != ch.GroupID || res.Channel.GroupID == ch.GroupID || res.Index < last {
		t.Fatalf("recover answered %+v (old group %d, last write %d)", res, ch.GroupID, last)
	}
	for _, r := range res.Channel.Placement {
		if r.NodeID == c.Nodes[4].Name || r.NodeID == c.Nodes[5].Name {
			t.Fatalf("the new placement %v holds a lost node", res.Channel.Placement)
		}
	}
	for i := range 100 {
		v, _, err := c.Client(1).Get(ctx, "rc", fmt.Sprintf("k%03d", i), api.GetOptions{})
		if err != nil || !bytes.Equal(v, []byte("v")) {
			t.Fatalf("k%03d after the recovery: %q, %v", i, v, err)
		}
	}
	idx, err := c.Client(2).Put(ctx, "rc", "after", []byte("a"), api.PutOptions{})
	if err != nil || idx <= last {
		t.Fatalf("write after the recovery: index %d (last before %d), %v", idx, last, err)
	}

	// The lost nodes come back with their data. From their first moment
	// on, they never answer from the old group (its replicas lack
	// "after"): not before their meta copies are current
	// (cluster/metacurrent.go), and not after.
	c.Start(4)
	c.Start(5)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		for _, i := range []int{4, 5} {
			for _, cons := range []api.Consistency{api.Stale, ""} {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				v, _, err := c.Client(i).Get(rctx, "rc", "after", api.GetOptions{Consistency: cons})
				cancel()
				if err == nil && string(v) != "a" || isStatus(err, 404) {
					t.Fatalf("%s read %q (%q) from the old group: %v", c.Nodes[i].Name, "after", cons, err)
				}
			}
		}
	}
	c.WaitFor(30*time.Second, func() error {
		for _, i := range []int{4, 5} {
			a := c.Nodes[i].Agent()
			if a == nil {
				return fmt.Errorf("%s not running", c.Nodes[i].Name)
			}
			if _, ok := a.Node.Shards().Replica(ch.GroupID); ok {
				return fmt.Errorf("%s still runs the retired group %d", c.Nodes[i].Name, ch.GroupID)
			}
		}
		return nil
	})
	for range 20 {
		got, err := c.Client(0).Channel(context.Background(), "rc")
		if err != nil {
			t.Fatal(err)
		}
		for _, lost := range []string{c.Nodes[4].Name, c.Nodes[5].Name} {
			if slices.Contains(got.Voters, lost) || got.Leader == lost {
				t.Fatalf("lost node %s in the recovered group: leader %s, voters %v", lost, got.Leader, got.Voters)
			}
		}
		if _, err := c.Client(4).Put(ctx, "rc", "via-returned", []byte("x"), api.PutOptions{}); err != nil {
			t.Fatalf("write through a returned node: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	v, _, err := c.Client(5).Get(ctx, "rc", "after", api.GetOptions{})
	if err != nil || string(v) != "a" {
		t.Fatalf("read through a returned node: %q, %v", v, err)
	}
}

func isStatus(err error, status int) bool {
	e := api.AsError(err)
	return e != nil && e.Status == status
}
