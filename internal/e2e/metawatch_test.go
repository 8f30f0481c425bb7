package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// The meta watch (cluster/metafollow.go): from cluster version 5 resource
// nodes are no members of the meta group; each follows the meta state
// through a watch on a core node into its own copy.

// waitWatching waits until the cluster runs fsm.Version, the meta
// configuration (as every core node has it) lists only core nodes, and
// every resource node follows the meta state by watch.
func waitWatching(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	c.WaitFor(60*time.Second, func() error {
		for _, nd := range c.Nodes {
			a := nd.Agent()
			if a == nil {
				continue
			}
			if v := a.Node.Meta().ClusterVersion(); v != fsm.Version {
				return fmt.Errorf("%s: cluster version %d, want %d", nd.Name, v, fsm.Version)
			}
			switch nd.Role {
			case fsm.RoleCore:
				_, _, conf := a.Node.MetaRaft()
				for _, s := range conf.Servers {
					if !strings.HasPrefix(shard.NodeOf(s.ID), "core") {
						return fmt.Errorf("%s: the meta configuration lists %s: %+v", nd.Name, s.ID, conf.Servers)
					}
				}
				if a.Node.MetaFollowing() != "" {
					return fmt.Errorf("core node %s follows by watch", nd.Name)
				}
			case fsm.RoleResource:
				if a.Node.MetaFollowing() == "" {
					return fmt.Errorf("%s does not follow the meta state by watch yet", nd.Name)
				}
			}
		}
		return nil
	})
}

// sameChannel waits until node i's copy holds channel name as core node 0's
// copy does (placement and modify index), or, want false, holds no such
// channel.
func sameChannel(t *testing.T, c *testcluster.Cluster, i int, name string, want bool) {
	t.Helper()
	c.WaitFor(30*time.Second, func() error {
		ref, ok := c.Nodes[0].Agent().Node.Meta().Channel(name)
		if ok != want {
			return fmt.Errorf("core1 has channel %q: %v", name, ok)
		}
		got, found := c.Nodes[i].Agent().Node.Meta().Channel(name)
		if found != want {
			return fmt.Errorf("%s has channel %q: %v, want %v", c.Nodes[i].Name, name, found, want)
		}
		if want && (got.ModifyIndex != ref.ModifyIndex || !slices.Equal(got.Placement, ref.Placement)) {
			return fmt.Errorf("%s: %q at %d %+v; core1: at %d %+v", c.Nodes[i].Name, name, got.ModifyIndex, got.Placement, ref.ModifyIndex, ref.Placement)
		}
		return nil
	})
}

// TestResourceNodeFollowsMetaByWatch: a resource node is not in the meta
// configuration and gets its copy of the meta state by watch: it sees a
// channel's creation, a change of its placement, a token's issue and a
// deletion; it serves requests with it (freshness proven by a meta read
// index); a restart resumes from the index its copy held on disk.
func TestResourceNodeFollowsMetaByWatch(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2, CoreWithoutData: true})
	ctx := ctxT(t)
	waitWatching(t, c)
	res := c.Index("res1")

	// Created through a core node; the resource node holds its replica and
	// serves a write with it.
	var ch api.Channel
	c.WaitFor(30*time.Second, func() error {
		var err error
		ch, err = c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "w1", Replicas: 2})
		return err
	})
	sameChannel(t, c, res, "w1", true)
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(res).Put(ctx, "w1", "k", []byte("v"), api.PutOptions{})
		return err
	})
	if got, _, err := c.Client(res+1).Get(ctx, "w1", "k", api.GetOptions{}); err != nil || string(got) != "v" {
		t.Fatalf("read through res2: %q, %v", got, err)
	}

	// A token issued through a core node is known to the resource node.
	tok, err := c.Client(1).CreateToken(ctx, ch.Name, api.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, func() error {
		if _, ok := c.Nodes[res].Agent().Node.Meta().Token(tok.ID); !ok {
			return fmt.Errorf("res1 does not know token %s", tok.ID)
		}
		return nil
	})

	// A placement change: 2 → 1 replica.
	one := 1
	if _, err := c.Client(2).ChangeChannel(ctx, "w1", api.ChangeChannelRequest{Replicas: &one}); err != nil {
		t.Fatal(err)
	}
	// core1, the reference sameChannel compares with, may not have applied
	// the change yet (it went through core3): wait for res1 to show it.
	c.WaitFor(30*time.Second, func() error {
		if got, _ := c.Nodes[res].Agent().Node.Meta().Channel("w1"); len(got.Placement) != 1 {
			return fmt.Errorf("res1 sees placement %+v, want one replica", got.Placement)
		}
		return nil
	})
	sameChannel(t, c, res, "w1", true)

	// Restart: the copy comes back from disk at the index it held, and
	// the node follows by watch from there.
	before := c.Nodes[res].Agent().Node.Meta().Applied()
	c.Stop(res)
	if _, err := os.Stat(filepath.Join(c.Nodes[res].Dir, "meta", "watch.json")); err != nil {
		t.Fatalf("the followed copy was not written: %v", err)
	}
	c.Start(res)
	if got := c.Nodes[res].Agent().Node.Meta().Applied(); got < before {
		t.Fatalf("restarted res1's copy is at %d, before the stop at %d: it did not resume from disk", got, before)
	}
	if c.Nodes[res].Agent().Node.MetaFollowing() == "" {
		t.Fatal("restarted res1 is fed by the meta group's Raft")
	}
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "w2", Replicas: 1})
		return err
	})
	sameChannel(t, c, res, "w2", true)
	if err := c.Client(0).DeleteChannel(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	sameChannel(t, c, res, "w2", false)
	waitWatching(t, c)
}

// TestMetaWatchSwitchesCore: the core node a resource node follows is
// killed; the resource node follows another, catches up with what was
// committed meanwhile, and serves the channel placed on it then.
func TestMetaWatchSwitchesCore(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1})
	ctx := ctxT(t)
	waitWatching(t, c)
	res := c.Index("res1")
	followed := c.Nodes[res].Agent().Node.MetaFollowing()
	c.Kill(c.Index(followed))
	other := 0
	for c.Nodes[other].Name == followed {
		other++
	}
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(other).CreateChannel(ctx, api.CreateChannelRequest{Name: "after", Replicas: 1, Nodes: []string{"res1"}})
		return err
	})
	c.WaitFor(30*time.Second, func() error {
		if now := c.Nodes[res].Agent().Node.MetaFollowing(); now == followed {
			return fmt.Errorf("res1 still follows %s", now)
		}
		if _, ok := c.Nodes[res].Agent().Node.Meta().Channel("after"); !ok {
			return fmt.Errorf("res1 does not know channel %q", "after")
		}
		return nil
	})
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(res).Put(ctx, "after", "k", []byte("v"), api.PutOptions{})
		return err
	})
}

// TestMetaWatchSnapshotAfterCompaction: a resource node stopped while the
// core nodes' meta logs are compacted past its copy's index gets the whole
// state from a core node when it comes back, then the entries after it.
func TestMetaWatchSnapshotAfterCompaction(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1,
		MetaRaft: shard.RaftTiming{SnapshotInterval: 100 * time.Millisecond, SnapshotThreshold: 8, TrailingLogs: 2}})
	ctx := ctxT(t)
	waitWatching(t, c)
	res := c.Index("res1")
	snapshots := func() float64 {
		sum := 0.0
		for i := range 3 {
			sum += metric(t, c, i, "shardnet_cluster_meta_watch_snapshots_total")
		}
		return sum
	}
	before := snapshots()
	applied := c.Nodes[res].Agent().Node.Meta().Applied()
	c.Stop(res)
	for i := range 12 {
		name := fmt.Sprintf("c%d", i)
		c.WaitFor(30*time.Second, func() error {
			_, err := c.Client(i%3).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: 1})
			return err
		})
	}
	// Every core node's log must begin past res1's index.
	c.WaitFor(30*time.Second, func() error {
		for i := range 3 {
			if first := c.Nodes[i].Agent().Node.MetaLogFirstIndex(); first <= applied+1 {
				return fmt.Errorf("%s: meta log begins at %d, res1's copy is at %d", c.Nodes[i].Name, first, applied)
			}
		}
		return nil
	})
	c.Start(res)
	for i := range 12 {
		sameChannel(t, c, res, fmt.Sprintf("c%d", i), true)
	}
	if after := snapshots(); after <= before {
		t.Fatalf("no core node sent the meta state (snapshots %v before, %v after)", before, after)
	}
}
