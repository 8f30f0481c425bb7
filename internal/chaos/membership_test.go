package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// Membership changes (cluster/DESIGN.md "Membership changes") under a
// steady load checked by porcupine.

// membershipOptions: five nodes, so a channel of three can grow to five.
func membershipOptions() testcluster.Options {
	return testcluster.Options{Core: 3, Resource: 2, LeaderRebalance: -1}
}

// runLoad starts a small bounded workload on channel and returns a
// function that stops it and checks its history.
func runLoad(t *testing.T, c *testcluster.Cluster, channel string) (stop func()) {
	t.Helper()
	seed := chaosSeed(t)
	clients := clientsOf(c, "")
	keys := []string{"k0", "k1", "k2"}
	rec, stats := NewRecorder(), NewStats()
	w := &Workload{Channel: channel, Keys: keys, Clients: 4, Nodes: clients, Rec: rec, Stats: stats,
		Seed: seed, OpTimeout: 5 * time.Second, Think: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		<-done
		t.Logf("load: %s", stats)
		fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer fcancel()
		if err := RecordFinalReads(fctx, rec, clients[c.Index(c.WaitLeader(channel))], channel, keys); err != nil {
			t.Errorf("final reads: %v", err)
		}
		if stats.Count("", "ok") < 50 {
			t.Errorf("only %d operations succeeded", stats.Count("", "ok"))
		}
		reportHistory(t, rec, seed)
	}
}

// scaleTo changes channel's replica count through a random running node,
// retrying while the meta leader moves.
func scaleTo(t *testing.T, c *testcluster.Cluster, channel string, n int) api.Channel {
	t.Helper()
	var ch api.Channel
	c.WaitFor(20*time.Second, func() error {
		var err error
		ch, err = c.Client(runningNode(c)).ChangeChannel(context.Background(), channel, api.ChangeChannelRequest{Replicas: &n})
		return err
	})
	if len(ch.Placement) != n {
		t.Fatalf("scaled to %d: placement %+v", n, ch.Placement)
	}
	return ch
}

func runningNode(c *testcluster.Cluster) int {
	var up []int
	for i, nd := range c.Nodes {
		if nd.Agent() != nil {
			up = append(up, i)
		}
	}
	return up[rand.IntN(len(up))]
}

// groupView is every running replica's configuration of a group.
type groupView struct {
	leader  string                   // node id
	configs map[string][]raft.Server // node id -> latest configuration
	infos   map[string]shard.ReplicaInfo
}

func viewGroup(c *testcluster.Cluster, gid uint64) groupView {
	v := groupView{configs: map[string][]raft.Server{}, infos: map[string]shard.ReplicaInfo{}}
	for _, nd := range c.Nodes {
		a := nd.Agent()
		if a == nil {
			continue
		}
		rep, ok := a.Node.Shards().Replica(gid)
		if !ok {
			continue
		}
		f := rep.Raft().GetConfiguration()
		if f.Error() != nil {
			continue
		}
		v.configs[nd.Name] = f.Configuration().Servers
		v.infos[nd.Name] = rep.Info()
		if rep.Raft().State() == raft.Leader {
			v.leader = nd.Name
		}
	}
	return v
}

func serverSet(servers []raft.Server) []string {
	var out []string
	for _, s := range servers {
		out = append(out, fmt.Sprintf("%s/%s", s.ID, s.Suffrage))
	}
	slices.Sort(out)
	return out
}

// waitConverged waits until the group's leader has exactly the placement
// as voters, and every placed replica holds the leader's configuration,
// and checks that no replica outside the creation placement (server ids in
// created) bootstrapped: its first configuration came from the leader.
func waitConverged(t *testing.T, c *testcluster.Cluster, channel string, created []api.Replica, timeout time.Duration) api.Channel {
	t.Helper()
	var ch api.Channel
	c.WaitFor(timeout, func() error {
		var err error
		ch, err = c.Client(runningNode(c)).Channel(context.Background(), channel)
		if err != nil {
			return err
		}
		if ch.Progress != api.ProgressConverged {
			return fmt.Errorf("progress %q: voters %v, non-voters %v, placement %v", ch.Progress, ch.Voters, ch.NonVoters, placedIDs(ch))
		}
		v := viewGroup(c, ch.GroupID)
		if v.leader == "" {
			return fmt.Errorf("no leader among the running replicas")
		}
		var want []string
		for _, r := range ch.Placement {
			want = append(want, r.ServerID+"/Voter")
		}
		slices.Sort(want)
		if got := serverSet(v.configs[v.leader]); !slices.Equal(got, want) {
			return fmt.Errorf("leader %s's configuration %v, want %v", v.leader, got, want)
		}
		for _, r := range ch.Placement {
			conf, ok := v.configs[r.NodeID]
			if !ok {
				return fmt.Errorf("no replica running on %s", r.NodeID)
			}
			if got := serverSet(conf); !slices.Equal(got, want) {
				return fmt.Errorf("replica on %s has configuration %v, the leader %v", r.NodeID, got, want)
			}
		}
		return nil
	})
	for node, info := range viewGroup(c, ch.GroupID).infos {
		creation := slices.ContainsFunc(created, func(r api.Replica) bool { return r.ServerID == info.ServerID })
		if info.Bootstrapped && !creation {
			t.Errorf("replica %s on %s, added after the channel's creation, bootstrapped the group", info.ServerID, node)
		}
	}
	return ch
}

func placedIDs(ch api.Channel) []string {
	var out []string
	for _, r := range ch.Placement {
		out = append(out, r.NodeID)
	}
	return out
}

// Scale 3 -> 5 -> 3 under load: no acknowledged write is lost (porcupine),
// the group ends with exactly the placement's voters, every replica holds
// its leader's configuration (the added ones never bootstrapped), and the
// dropped replicas' data is deleted only once the leader's committed
// configuration no longer lists them.
func TestScaleUnderLoad(t *testing.T) {
	c := testcluster.New(t, membershipOptions())
	const channel = "scale"
	created := c.CreateChannel(channel, 3)
	stop := runLoad(t, c, channel)
	time.Sleep(time.Second) // some history before the first change

	start := time.Now()
	ch := scaleTo(t, c, channel, 5)
	if ch.Replicas != 5 {
		t.Fatalf("replicas %d after scaling to 5", ch.Replicas)
	}
	waitConverged(t, c, channel, created.Placement, 30*time.Second)
	t.Logf("3 -> 5 converged %v after the PATCH", time.Since(start).Round(time.Millisecond))
	// Seven on five nodes: refused, with the numbers, nothing changed.
	seven := 7
	_, err := c.Client(0).ChangeChannel(context.Background(), channel, api.ChangeChannelRequest{Replicas: &seven})
	if !api.IsConflict(err) || !strings.Contains(err.Error(), "needs 7 replicas, 5 placed: 2 more wanted, 0 eligible nodes") {
		t.Fatalf("scaling to seven on five nodes: %v", err)
	}

	five := placedIDs(ch)
	// A dropped replica's data goes only once the leader no longer lists
	// it: watched closely from before the scale-down until both are gone.
	watchDone := make(chan struct{})
	var violations []string
	go func() {
		defer close(watchDone)
		deadline := time.Now().Add(40 * time.Second)
		for time.Now().Before(deadline) {
			v := viewGroup(c, created.GroupID)
			gone := 0
			for _, id := range five {
				if _, running := v.configs[id]; running {
					continue
				}
				gone++
				sid := c.Node(id).Agent().Node.ServerID()
				if v.leader != "" && slices.ContainsFunc(v.configs[v.leader], func(s raft.Server) bool { return s.ID == sid }) {
					violations = append(violations, fmt.Sprintf("replica on %s deleted while the leader %s lists it: %v", id, v.leader, v.configs[v.leader]))
				}
			}
			if gone == 2 {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		violations = append(violations, "the dropped replicas were not deleted within 40 s")
	}()
	start = time.Now()
	ch = scaleTo(t, c, channel, 3)
	dropped := slices.DeleteFunc(slices.Clone(five), func(id string) bool { return slices.Contains(placedIDs(ch), id) })
	if len(dropped) != 2 {
		t.Fatalf("scaling 5 -> 3 dropped %v", dropped)
	}
	<-watchDone
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("5 -> 3: both dropped replicas deleted %v after the PATCH", time.Since(start).Round(time.Millisecond))
	waitConverged(t, c, channel, created.Placement, 30*time.Second)
	stop()
	for _, id := range dropped {
		if _, err := os.Stat(fmt.Sprintf("%s/replicas/%d", c.Node(id).Dir, created.GroupID)); !os.IsNotExist(err) {
			t.Errorf("replica dir of the dropped node %s: %v, want it deleted", id, err)
		}
	}
}

// A kill of the channel's leader in the middle of a configuration change:
// the group converges once the node is back, and nothing acknowledged is
// lost.
func TestKillLeaderDuringScale(t *testing.T) {
	c := testcluster.New(t, membershipOptions())
	const channel = "kill"
	created := c.CreateChannel(channel, 3)
	stop := runLoad(t, c, channel)
	time.Sleep(time.Second)
	leader := c.WaitLeader(channel)
	gid := scaleTo(t, c, channel, 5).GroupID
	// Killed once its configuration holds a non-voter: in the middle of
	// adding a replica (changes are quick; if every poll missed it, the
	// kill still lands before the group has converged, or the test says so).
	mid := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		v := viewGroup(c, gid)
		if slices.ContainsFunc(v.configs[leader], func(s raft.Server) bool { return s.Suffrage == raft.Nonvoter }) {
			mid = true
			break
		}
	}
	c.Kill(c.Index(leader))
	t.Logf("leader %s killed; its configuration held a non-voter: %v", leader, mid)
	time.Sleep(2 * time.Second)
	c.Start(c.Index(leader))
	waitConverged(t, c, channel, created.Placement, 45*time.Second)
	stop()
}

// A node whose data directory is wiped and restarted under the same name
// comes back with a new server id: the meta leader renews the placement to
// it, the channel's leader removes the old id and adds the new one, which
// catches up from the others (the data is there).
func TestWipedNodeRejoins(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1, LeaderRebalance: -1})
	const channel = "wipe"
	ch := c.CreateChannel(channel, 3)
	leader := c.WaitLeader(channel)
	ctx := context.Background()
	for i := range 20 {
		c.WaitFor(10*time.Second, func() error {
			_, err := c.Client(runningNode(c)).Put(ctx, channel, fmt.Sprintf("k%d", i), []byte("v"), api.PutOptions{})
			return err
		})
	}
	// A placed node that does not lead the channel, a resource node if
	// one is placed (a core node's meta vote makes the wipe slower).
	var victim string
	for _, r := range ch.Placement {
		if r.NodeID != leader && (victim == "" || c.Node(r.NodeID).Role == "resource") {
			victim = r.NodeID
		}
	}
	i := c.Index(victim)
	oldID := c.Node(victim).Agent().Node.ServerID()
	c.Stop(i)
	if err := os.RemoveAll(c.Node(victim).Dir); err != nil {
		t.Fatal(err)
	}
	c.Start(i)
	newID := c.Node(victim).Agent().Node.ServerID()
	if newID == oldID {
		t.Fatalf("the wiped node came back as %s, its old server id", newID)
	}
	got := waitConverged(t, c, channel, ch.Placement, 45*time.Second)
	for _, r := range got.Placement {
		if r.NodeID == victim && r.ServerID != string(newID) {
			t.Fatalf("placement names %s for %s, want the new incarnation %s", r.ServerID, victim, newID)
		}
	}
	var v groupView
	c.WaitFor(10*time.Second, func() error {
		if v = viewGroup(c, ch.GroupID); v.leader == "" {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	if slices.ContainsFunc(v.configs[v.leader], func(s raft.Server) bool { return s.ID == oldID }) {
		t.Fatalf("the old incarnation %s is still in the group: %v", oldID, v.configs[v.leader])
	}
	// Its replica holds the data written before the wipe.
	c.WaitFor(20*time.Second, func() error {
		rep, ok := c.Node(victim).Agent().Node.Shards().Replica(ch.GroupID)
		if !ok {
			return fmt.Errorf("no replica on %s", victim)
		}
		if st := rep.FSM().Stats(); st.Keys < 20 {
			return fmt.Errorf("replica on %s holds %d keys, want 20", victim, st.Keys)
		}
		return nil
	})
}

// A channel leader whose copy of the meta state trails does not act on
// it: here the new leader's copy still has the placement of three while
// the group holds the fourth replica the newer placement added; removing
// that replica would undo the newer placement. It waits until its copy has
// caught up with the meta leader's commit index.
func TestStaleMetaLeaderWaits(t *testing.T) {
	c := testcluster.New(t, membershipOptions())
	const channel = "stale"
	created := c.CreateChannel(channel, 3)
	leader := c.WaitLeader(channel)
	// The follower that will lead with a stale copy: placed, not leading
	// the channel, not leading the meta group (whose writes would wait for
	// its blocked copy).
	var stale string
	for _, r := range created.Placement {
		if nd := c.Node(r.NodeID); r.NodeID != leader && !nd.Agent().Node.IsMetaLeader() {
			stale = r.NodeID
		}
	}
	if stale == "" {
		t.Fatalf("no follower to use in %v", placedIDs(created))
	}
	staleNode := c.Node(stale).Agent().Node
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	staleNode.Meta().SetApplyHook(func(uint64) { <-release })
	defer staleNode.Meta().SetApplyHook(nil)

	ch := scaleTo(t, c, channel, 4)
	var added string
	for _, r := range ch.Placement {
		if !slices.ContainsFunc(created.Placement, func(o api.Replica) bool { return o.NodeID == r.NodeID }) {
			added = r.ServerID
		}
	}
	// Converged under the current leader (the stale node's own replica
	// takes part: only its meta copy is held back).
	c.WaitFor(30*time.Second, func() error {
		v := viewGroup(c, ch.GroupID)
		conf := v.configs[v.leader]
		if len(conf) != 4 || slices.ContainsFunc(conf, func(s raft.Server) bool { return s.Suffrage != raft.Voter }) {
			return fmt.Errorf("leader %s's configuration %v", v.leader, conf)
		}
		return nil
	})
	// Hand the leadership to the stale node.
	c.WaitFor(20*time.Second, func() error {
		v := viewGroup(c, ch.GroupID)
		switch v.leader {
		case stale:
			return nil
		case "":
			return fmt.Errorf("no leader")
		}
		rep, ok := c.Node(v.leader).Agent().Node.Shards().Replica(ch.GroupID)
		if !ok {
			return fmt.Errorf("no leader replica")
		}
		_ = rep.Raft().LeadershipTransferToServer(staleNode.ServerID(), raft.ServerAddress(staleNode.ClusterAddr())).Error()
		return fmt.Errorf("leader is %s, not %s yet", v.leader, stale)
	})
	// For a while (longer than its meta sync waits), it keeps the replica
	// the newer placement added.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		v := viewGroup(c, ch.GroupID)
		if v.leader == stale && !slices.ContainsFunc(v.configs[stale], func(s raft.Server) bool { return string(s.ID) == added }) {
			t.Fatalf("the leader %s, whose meta copy trails, removed %s, which the newer placement added: %v", stale, added, v.configs[stale])
		}
	}
	released = true
	close(release)
	waitConverged(t, c, channel, created.Placement, 30*time.Second)
}

// A leader that the placement drops hands its leadership to a placed
// voter before it goes; the next leader removes it, and it deletes its
// replica. Arranged so: the leader when the 5 -> 3 placement is computed
// has its meta copy held back (it does not act), and the leadership is
// then handed to one of the dropped replicas, which finds itself unplaced.
func TestDroppedLeaderHandsOver(t *testing.T) {
	c := testcluster.New(t, membershipOptions())
	const channel = "handover"
	created := c.CreateChannel(channel, 3)
	stop := runLoad(t, c, channel)
	five := scaleTo(t, c, channel, 5)
	waitConverged(t, c, channel, created.Placement, 30*time.Second)

	var v groupView
	c.WaitFor(10*time.Second, func() error {
		if v = viewGroup(c, five.GroupID); v.leader == "" {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	held := c.Node(v.leader).Agent().Node
	if held.IsMetaLeader() {
		t.Skipf("the channel's leader %s leads the meta group: its held-back copy would hold back the meta writes", v.leader)
	}
	release := make(chan struct{})
	var once sync.Once
	unhold := func() { once.Do(func() { close(release) }) }
	defer unhold()
	held.Meta().SetApplyHook(func(uint64) { <-release })
	defer held.Meta().SetApplyHook(nil)

	three := scaleTo(t, c, channel, 3)
	var dropped []string
	for _, r := range five.Placement {
		if !slices.ContainsFunc(three.Placement, func(o api.Replica) bool { return o.NodeID == r.NodeID }) {
			dropped = append(dropped, r.NodeID)
		}
	}
	if slices.Contains(dropped, v.leader) {
		t.Fatalf("the placement dropped the leader %s it was computed under", v.leader)
	}
	target := c.Node(dropped[0]).Agent().Node
	removedFirst := false
	c.WaitFor(20*time.Second, func() error {
		g := viewGroup(c, five.GroupID)
		if g.leader == dropped[0] {
			return nil
		}
		if g.leader != "" && !slices.ContainsFunc(g.configs[g.leader], func(s raft.Server) bool { return s.ID == target.ServerID() }) {
			// Another leader (one whose meta copy is not held back: the
			// held node lost the lead under load) removed it before it
			// ever led, or it led, handed over and was removed.
			removedFirst = testcluster.Metric(t, c.Node(dropped[0]).URL(), "", `shardnet_cluster_member_changes_total{op="transfer_leadership"}`) < 1
			return nil
		}
		if g.leader == "" {
			return fmt.Errorf("no leader")
		}
		rep, ok := c.Node(g.leader).Agent().Node.Shards().Replica(five.GroupID)
		if !ok {
			return fmt.Errorf("no leader replica")
		}
		_ = rep.Raft().LeadershipTransferToServer(target.ServerID(), raft.ServerAddress(target.ClusterAddr())).Error()
		return fmt.Errorf("leader is %s, not %s yet", g.leader, dropped[0])
	})
	if removedFirst {
		t.Skipf("%s was removed from the group before it could be made to lead: the premise of this run was not reached", dropped[0])
	}
	// It hands over by itself; the next leader removes it.
	c.WaitFor(30*time.Second, func() error {
		if got := testcluster.Metric(t, c.Node(dropped[0]).URL(), "", `shardnet_cluster_member_changes_total{op="transfer_leadership"}`); got < 1 {
			return fmt.Errorf("%s has not handed its leadership over", dropped[0])
		}
		return nil
	})
	unhold()
	waitConverged(t, c, channel, created.Placement, 30*time.Second)
	c.WaitFor(30*time.Second, func() error {
		for _, id := range dropped {
			if _, ok := c.Node(id).Agent().Node.Shards().Replica(five.GroupID); ok {
				return fmt.Errorf("the dropped replica on %s is still there", id)
			}
		}
		return nil
	})
	stop()
}
