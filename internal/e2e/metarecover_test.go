package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// TestRecoverMetaAfterLosingAQuorum: 2 of 3 core nodes are lost for good;
// the survivor, stopped, is recovered offline (shardnet recover-meta) and,
// restarted, leads the meta group alone: channels are created and read
// again. The two lost nodes, started with their old data, are fenced: they
// never vote or lead, they report the fence, and the cluster keeps one meta
// leader; one of them, wiped, rejoins as a new incarnation and votes.
func TestRecoverMetaAfterLosingAQuorum(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 3})
	// The whole test, not each call: ctxT's 30 s ran out mid-test on a
	// loaded machine (the test takes 20-80 s), and every later call
	// then failed at once.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pins := []string{c.Nodes[3].Name, c.Nodes[4].Name, c.Nodes[5].Name}
	for _, name := range []string{"m1", "m2"} {
		c.WaitFor(30*time.Second, func() (err error) {
			_, err = c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Nodes: pins})
			return err
		})
		c.WaitLeader(name)
		if _, err := c.Client(3).Put(ctx, name, "k", []byte(name), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	oldIDs := make([]raft.ServerID, 3)
	for i := range 3 {
		oldIDs[i] = c.Nodes[i].Agent().Node.ServerID()
	}

	// core2 and core3 are lost; core1 is stopped for the recovery.
	c.Kill(1)
	c.Kill(2)
	c.Stop(0)
	dir := c.Nodes[0].Dir

	// Refused while the node runs (res1's meta log is locked).
	if err := cluster.RecoverMeta(cluster.MetaRecoverOptions{DataDir: c.Nodes[3].Dir, Confirm: true}); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("recover-meta on a running node: %v", err)
	}
	// Without the confirmation: a plan, nothing changed.
	var plan bytes.Buffer
	err := cluster.RecoverMeta(cluster.MetaRecoverOptions{DataDir: dir, Out: &plan})
	if !errors.Is(err, cluster.ErrMetaRecoverUnconfirmed) || !strings.Contains(plan.String(), "last index") ||
		!strings.Contains(plan.String(), string(oldIDs[1])) || !strings.Contains(plan.String(), "outcome_unknown") {
		t.Fatalf("unconfirmed recover-meta: %v\n%s", err, plan.String())
	}
	if _, err := os.Stat(dir + "/meta/fence.json"); err == nil {
		t.Fatal("an unconfirmed recovery wrote its fence")
	}
	var out bytes.Buffer
	if err := cluster.RecoverMeta(cluster.MetaRecoverOptions{DataDir: dir, Confirm: true, Out: &out}); err != nil {
		t.Fatalf("recover-meta: %v\n%s", err, out.String())
	}
	t.Logf("recover-meta:\n%s", out.String())

	// The survivor leads and the meta group serves.
	c.Start(0)
	c.WaitFor(30*time.Second, func() error {
		if !c.Nodes[0].Agent().Node.IsMetaLeader() {
			return fmt.Errorf("core1 does not lead the meta group")
		}
		_, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "after", Nodes: pins})
		return err
	})
	for _, name := range []string{"m1", "m2"} {
		c.WaitFor(20*time.Second, func() error {
			v, _, err := c.Client(0).Get(ctx, name, "k", api.GetOptions{})
			if err == nil && string(v) != name {
				return fmt.Errorf("%s/k = %q", name, v)
			}
			return err
		})
	}
	c.WaitLeader("after")
	if _, err := c.Client(0).Put(ctx, "after", "k", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// The fence is committed: every node refuses the lost ids.
	c.WaitFor(20*time.Second, func() error {
		for _, i := range []int{0, 3, 4, 5} {
			m := c.Nodes[i].Agent().Node.Meta()
			if !m.IsFenced(string(oldIDs[1])) || !m.IsFenced(string(oldIDs[2])) || m.IsFenced(string(oldIDs[0])) {
				return fmt.Errorf("%s: fenced %v", c.Nodes[i].Name, m.Fenced())
			}
		}
		return nil
	})

	// core2 and core3 come back with their old data: fenced. Between them
	// they are a majority of the old configuration, but they learn of the
	// fence from gossip before either stands for election.
	c.Start(1)
	c.Start(2)
	c.WaitFor(20*time.Second, func() error {
		for _, i := range []int{1, 2} {
			st, err := c.Client(i).Status(ctx)
			if err != nil {
				return err
			}
			if st.Fenced == "" {
				return fmt.Errorf("%s does not report its fence", c.Nodes[i].Name)
			}
		}
		return nil
	})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for i := range c.Nodes {
			if c.Nodes[i].Agent().Node.IsMetaLeader() != (i == 0) {
				t.Fatalf("meta leadership: %s leads: %v", c.Nodes[i].Name, c.Nodes[i].Agent().Node.IsMetaLeader())
			}
		}
		_, _, conf := c.Nodes[0].Agent().Node.MetaRaft()
		for _, s := range conf.Servers {
			if s.ID == oldIDs[1] || s.ID == oldIDs[2] {
				t.Fatalf("a fenced id is back in the meta configuration: %v", conf.Servers)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, _, err := c.Client(2).Get(ctx, "m1", "k", api.GetOptions{}); err == nil {
		t.Fatal("the fenced core3 answered a read")
	}

	// core2 comes back wiped: a new incarnation, which joins and votes.
	c.Stop(1)
	if err := os.RemoveAll(c.Nodes[1].Dir); err != nil {
		t.Fatal(err)
	}
	c.Start(1)
	c.WaitFor(40*time.Second, func() error {
		_, _, conf := c.Nodes[0].Agent().Node.MetaRaft()
		for _, s := range conf.Servers {
			if shard.NodeOf(s.ID) == c.Nodes[1].Name && s.ID != oldIDs[1] && s.Suffrage == raft.Voter {
				return nil
			}
		}
		return fmt.Errorf("core2's new incarnation is no meta voter: %v", conf.Servers)
	})
	// The cluster serves through the new incarnation.
	c.WaitFor(20*time.Second, func() error {
		_, err := c.Client(1).CreateChannel(context.Background(), api.CreateChannelRequest{Name: "later", Nodes: pins})
		return err
	})
	c.WaitFor(20*time.Second, func() error {
		v, _, err := c.Client(1).Get(ctx, "m2", "k", api.GetOptions{})
		if err == nil && string(v) != "m2" {
			return fmt.Errorf("m2/k = %q", v)
		}
		return err
	})
}
