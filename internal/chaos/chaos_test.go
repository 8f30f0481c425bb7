package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// The knobs of the chaos runs (docs/testing.md):
//
//	SHARDNET_CHAOS_SEED=N          replay the schedule of seed N (default: random, logged)
//	SHARDNET_CHAOS_DURATION=5m     how long the load and the faults last (default 25s)
//	SHARDNET_CHAOS_CHECK_TIMEOUT=  how long porcupine may search (default 2m)
const (
	envSeed         = "SHARDNET_CHAOS_SEED"
	envDuration     = "SHARDNET_CHAOS_DURATION"
	envCheckTimeout = "SHARDNET_CHAOS_CHECK_TIMEOUT"
)

func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64() >> 1
	if s := os.Getenv(envSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d)", seed, envSeed, seed)
	return seed
}

func envDurationOr(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration", name, s)
	}
	return d
}

// vizPath is where a failing history's visualization goes:
// internal/chaos/testdata/output/<test>-<seed>.html (gitignored).
func vizPath(t *testing.T, seed uint64) string {
	name := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_")
	abs, err := filepath.Abs(filepath.Join("testdata", "output", fmt.Sprintf("%s-%d.html", name, seed)))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// clientsOf returns one API client per node, sharing one HTTP client with
// enough idle connections for the workload.
func clientsOf(c *testcluster.Cluster, token string) []*api.Client {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}}
	out := make([]*api.Client, len(c.Nodes))
	for i, nd := range c.Nodes {
		out[i] = api.NewClient(nd.URL(), token, hc)
	}
	return out
}

// chaosRaft: the production timers (failover comes from the prober, not
// from them), snapshots small and frequent enough that restarted or
// cut-off followers catch up through InstallSnapshot, and a leader
// rebalance every second, so that leadership hand-overs (and the writes
// redirected during them) happen among the faults.
func chaosRaft() testcluster.Options {
	rt := shard.DefaultRaftTiming()
	rt.SnapshotThreshold = 512
	rt.TrailingLogs = 256
	rt.SnapshotInterval = 2 * time.Second
	return testcluster.Options{Core: 3, Resource: 2, Faults: true, ChannelRaft: rt, LeaderRebalance: time.Second}
}

// Linearizability under faults: concurrent clients put, CAS-put, delete and
// read a few keys of one channel through every node while the nemesis
// crashes, restarts, partitions and slows nodes; then the network heals,
// every node restarts, the replicas must converge to identical state, and
// the whole history (with a final read of every key) must be linearizable.
func TestLinearizableUnderFaults(t *testing.T) {
	seed := chaosSeed(t)
	dur := envDurationOr(t, envDuration, 25*time.Second)
	t.Logf("load and faults for %v", dur)

	c := testcluster.New(t, chaosRaft())
	const channel = "chaos"
	ch := c.CreateChannel(channel, 3)
	clients := clientsOf(c, "")
	keys := []string{"k0", "k1", "k2", "k3"}
	rec, stats := NewRecorder(), NewStats()
	w := &Workload{Channel: channel, Keys: keys, Clients: 8, Nodes: clients, Rec: rec, Stats: stats,
		Seed: seed, OpTimeout: 5 * time.Second, Think: 10 * time.Millisecond}
	nem := &Nemesis{C: c, GroupID: ch.GroupID, Rng: rand.New(rand.NewPCG(seed, 1)), Rec: rec, Logf: t.Logf}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		w.Run(ctx)
	}()
	nem.Run(ctx) // on the test goroutine: restarts may fail the test
	<-loadDone
	loadEnd := rec.Now()
	t.Logf("load done: %s", stats)
	t.Logf("faults: %d (%s)", nem.Total(), nem.Summary())
	t.Log(rec.Availability(loadEnd))

	nem.Recover()
	c.WaitLeader(channel)
	final, err := Converge(clients, channel, 60*time.Second)
	if err != nil {
		t.Errorf("convergence: %v", err)
	} else {
		t.Logf("replicas converged: %d keys at applied index %d, hash %s", len(final.Items), final.Index, final.Hash)
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	if err := RecordFinalReads(fctx, rec, clients[0], channel, keys); err != nil {
		t.Errorf("final reads: %v", err)
	}

	if n, example := stats.Code("500 internal"); n > 0 {
		t.Errorf("%d answers were 500 internal (a bug by the API's own definition), e.g. %s", n, example)
	}
	if stats.Count("", "ok") < 100 {
		t.Errorf("only %d operations succeeded: the workload did not get going", stats.Count("", "ok"))
	}
	reportHistory(t, rec, seed)
}

// The checker can fail: a deliberate bug — reads served by a partitioned
// follower from its stale state but recorded as linearizable gets — must
// make the history non-linearizable, while the same history without the
// bad read passes.
func TestCheckerCatchesStaleReads(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Faults: true})
	const channel, key = "stale", "k"
	ch := c.CreateChannel(channel, 3)
	clients := clientsOf(c, "")
	leader, follower := leaderAndFollower(t, c, ch.GroupID)
	rec, stats := NewRecorder(), NewStats()
	writer := NewClient(0, channel, clients, rec, stats)
	reader := NewClient(1, channel, clients, rec, stats)
	reader.StaleReads = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustPut := func() uint64 {
		t.Helper()
		c.WaitFor(20*time.Second, func() error {
			if st := writer.Put(ctx, leader, key, false); st != StatusOK {
				return fmt.Errorf("put: %s (%s)", st, stats)
			}
			return nil
		})
		return writer.known[key]
	}

	first := mustPut()
	isolateCaughtUp(t, c, clients, channel, leader, follower, first, func(ctx context.Context) error {
		_, _, err := clients[follower].Get(ctx, channel, key, api.GetOptions{Consistency: api.Stale})
		return err
	})
	defer c.Heal()
	mustPut()
	mustPut()

	before, err := rec.Check(30*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	if !before.OK() {
		t.Fatalf("the history before the stale read: %s %v, want linearizable", before.Verdict, before.Problems)
	}
	if st := reader.Get(ctx, follower, key, ""); st != StatusOK {
		t.Fatalf("stale read from the isolated follower: %s (%s)", st, stats)
	}
	viz := filepath.Join(t.TempDir(), "stale.html")
	after, err := rec.Check(30*time.Second, viz)
	if err != nil {
		t.Fatal(err)
	}
	if after.Verdict != porcupine.Illegal {
		t.Fatalf("a stale read recorded as linearizable: verdict %s, want %s", after.Verdict, porcupine.Illegal)
	}
	if _, err := os.Stat(after.Visualization); err != nil {
		t.Fatalf("no visualization of the failing history: %v", err)
	}
}

// leaderAndFollower waits for the leader of group gid and returns its
// node and another one.
func leaderAndFollower(t *testing.T, c *testcluster.Cluster, gid uint64) (leader, follower int) {
	t.Helper()
	nem := &Nemesis{C: c, GroupID: gid}
	c.WaitFor(30*time.Second, func() error {
		if leader = nem.Leader(); leader < 0 {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	return leader, (leader + 1) % len(c.Nodes)
}

// isolateCaughtUp prepares a stale read: it waits until the follower's own
// replica of channel has applied index (a stale read through the
// follower's node proves less otherwise: a node whose replica is not
// created yet forwards it to one that is), runs touch, one read through
// the follower (a node serves channels only once its copy of the meta
// state has been confirmed current since it started,
// cluster/metacurrent.go), until it succeeds, and cuts the follower off
// from the other nodes. The caller heals.
func isolateCaughtUp(t *testing.T, c *testcluster.Cluster, clients []*api.Client, channel string, leader, follower int, index uint64, touch func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.WaitFor(20*time.Second, func() error {
		desc, err := clients[leader].Channel(ctx, channel)
		if err != nil {
			return err
		}
		for _, r := range desc.Placement {
			if r.NodeID == c.Nodes[follower].Name {
				if r.Applied < index {
					return fmt.Errorf("follower's replica at %d, want %d", r.Applied, index)
				}
				return nil
			}
		}
		return fmt.Errorf("no replica on the follower %s in %+v", c.Nodes[follower].Name, desc.Placement)
	})
	c.WaitFor(20*time.Second, func() error { return touch(ctx) })
	c.Isolate(follower)
}

// reportHistory runs porcupine on rec and reports the verdict: a history that
// is not linearizable fails the test, and so does a checker that gave up.
func reportHistory(t *testing.T, rec *Recorder, seed uint64) {
	t.Helper()
	checkTimeout := envDurationOr(t, envCheckTimeout, 2*time.Minute)
	res, err := rec.Check(checkTimeout, vizPath(t, seed))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("history: %d operations (%d with unknown outcome), %s in %v", res.Ops, res.Pending, res.Verdict, res.Took.Round(time.Millisecond))
	for _, p := range res.Problems {
		t.Errorf("history: %s", p)
	}
	switch res.Verdict {
	case porcupine.Illegal:
		t.Errorf("history is NOT linearizable (seed %d); visualization: %s", seed, res.Visualization)
	case porcupine.Unknown:
		// Not a bug found, but no pass either: a check that proves
		// nothing must not look like one that proved something.
		t.Errorf("porcupine gave up after %v (raise %s): the history is not proven linearizable; partial visualization: %s",
			checkTimeout, envCheckTimeout, res.Visualization)
	}
}
