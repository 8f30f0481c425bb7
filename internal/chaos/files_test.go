package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// envFilesDuration sets how long the file workload and its faults last
// (default 15 s: the test runs in make test-cluster beside the KV one).
const envFilesDuration = "SHARDNET_CHAOS_FILES_DURATION"

// Linearizability of file manifests under faults: concurrent clients
// upload (plain, If-None-Match: *, If-Match), delete (plain, If-Match),
// download and stat a few paths of one channel through every node while
// the nemesis crashes, restarts, partitions and slows nodes; then the
// network heals, every node restarts, every replica must list the same
// manifests and serve every file whole through every node, and the whole
// history (with a final listing of every path) must be linearizable.
func TestFilesLinearizableUnderFaults(t *testing.T) {
	seed := chaosSeed(t)
	dur := envDurationOr(t, envFilesDuration, 15*time.Second)
	t.Logf("load and faults for %v", dur)

	c := testcluster.New(t, chaosRaft())
	const channel = "files"
	ch := c.CreateChannel(channel, 3)
	clients := clientsOf(c, "")
	waitFilesVersion(t, c, clients)
	paths := []string{"a/f0", "a/f1", "b/f2", "f3"}
	rec, stats, etags := NewRecorder(), NewStats(), NewETags()
	w := &FileWorkload{Channel: channel, Paths: paths, Clients: 6, Nodes: clients, Rec: rec, Stats: stats, ETags: etags,
		Seed: seed, Think: 20 * time.Millisecond}
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
	if final, err := ConvergeFiles(clients, channel, 60*time.Second); err != nil {
		t.Errorf("convergence: %v", err)
	} else {
		t.Logf("replicas converged: %d files, each served whole by every node", len(final.Files))
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	if err := RecordFinalFiles(fctx, rec, clients[0], channel, paths, etags); err != nil {
		t.Errorf("final reads: %v", err)
	}

	if n, example := stats.Code("500 internal"); n > 0 {
		t.Errorf("%d answers were 500 internal (a bug by the API's own definition), e.g. %s", n, example)
	}
	if n := stats.Count("", "ok"); n < 50 {
		t.Errorf("only %d operations succeeded: the workload did not get going", n)
	}
	if stats.Count("put", "ok") == 0 || stats.Count("putif", "") == 0 || stats.Count("del", "") == 0 {
		t.Errorf("the workload did not exercise every kind of write: %s", stats)
	}
	reportHistory(t, rec, seed)
}

// The checker can fail on files too: a stat served by a partitioned
// follower from its stale manifests but recorded as linearizable must make
// the history non-linearizable, while the same history without it passes.
func TestCheckerCatchesStaleFileStats(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Faults: true})
	const channel, path = "stalefiles", "img/cat.png"
	ch := c.CreateChannel(channel, 3)
	clients := clientsOf(c, "")
	waitFilesVersion(t, c, clients)
	leader, follower := leaderAndFollower(t, c, ch.GroupID)
	rec, stats, etags := NewRecorder(), NewStats(), NewETags()
	writer := NewFileClient(0, channel, clients, rec, stats, etags, 1)
	reader := NewFileClient(1, channel, clients, rec, stats, etags, 1)
	reader.StaleReads = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustPut := func(mode PutMode) {
		t.Helper()
		c.WaitFor(20*time.Second, func() error {
			if st := writer.Put(ctx, leader, path, mode); st != StatusOK {
				return fmt.Errorf("put: %s (%s)", st, stats)
			}
			return nil
		})
	}

	mustPut(PutCreate)
	st, err := clients[leader].StatFile(ctx, channel, path)
	if err != nil {
		t.Fatal(err)
	}
	isolateCaughtUp(t, c, clients, channel, leader, follower, st.Index, func(ctx context.Context) error {
		_, err := clients[follower].StatFileAt(ctx, channel, path, api.Stale)
		return err
	})
	defer c.Heal()
	mustPut(PutReplace)
	mustPut(PutPlain)

	before, err := rec.Check(30*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	if !before.OK() {
		t.Fatalf("the history before the stale stat: %s %v, want linearizable", before.Verdict, before.Problems)
	}
	if st := reader.Stat(ctx, follower, path, ""); st != StatusOK {
		t.Fatalf("stale stat from the isolated follower: %s (%s)", st, stats)
	}
	viz := filepath.Join(t.TempDir(), "stale.html")
	after, err := rec.Check(30*time.Second, viz)
	if err != nil {
		t.Fatal(err)
	}
	if after.Verdict != porcupine.Illegal {
		t.Fatalf("a stale stat recorded as linearizable: verdict %s, want %s", after.Verdict, porcupine.Illegal)
	}
	if _, err := os.Stat(after.Visualization); err != nil {
		t.Fatalf("no visualization of the failing history: %v", err)
	}
}

// waitFilesVersion waits until every node runs the cluster version that
// has files (4): before, uploads are refused with upgrade_pending, which
// tells the checker nothing.
func waitFilesVersion(t *testing.T, c *testcluster.Cluster, clients []*api.Client) {
	t.Helper()
	c.WaitFor(30*time.Second, func() error {
		for i, cl := range clients {
			st, err := cl.Status(context.Background())
			if err != nil {
				return err
			}
			if st.ClusterVersion < 4 {
				return fmt.Errorf("node %d runs cluster version %d, files need 4", i, st.ClusterVersion)
			}
		}
		return nil
	})
}
