package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// oldCommit is the release before command versions (version 1): no hash
// checks, nodes report no version. A fixed commit, so that the test always
// runs the same mix.
const oldCommit = "404f01c6e1a3613004c99ba9927676f381aefb16"

// TestRollingUpgrade: a cluster of two nodes of oldCommit's binary and one
// of this tree's keeps taking writes, runs cluster version 1 and proposes
// no hash check (the old nodes could not take part), even while the new
// node leads the channel and the meta group. Then the old nodes are
// restarted one at a time with this tree's binary, on their data dirs,
// under the same write load: the version stays 1 while an old node is a
// member (even one that is down), becomes 2 once every node runs the new
// binary, the channel and meta hash checks then run and agree, and every
// acknowledged write is there with its value at the end
// (docs/operations.md "Upgrades").
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs real processes")
	}
	oldBin := buildOldShardnet(t)
	newBin := buildShardnet(t)
	// Info, for the lines that say a hash check was held back; no leader
	// rebalancing, so that n1 keeps the leaderships it is given below.
	// -insecure: the old binary knows only the cluster key, which the new
	// one keeps speaking without certificates.
	// -serve-data: core nodes of the new binary host replicas only with it
	// (the old binary's always do).
	newFlags := []string{"-hash-check-interval", "300ms", "-log-level", "info", "-leader-rebalance", "off", "-insecure", "-serve-data"}
	pc := startProcClusterOf(t, []string{newBin, oldBin, oldBin}, func(_, bin string) []string {
		if bin == newBin {
			return newFlags
		}
		return nil
	})
	cl := pc.clients()
	const channel = "upgrade"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc.createChannel(t, channel)

	// A second channel takes the linearizability workload (puts, CAS,
	// transactions, deletes, reads through every node) for the whole
	// upgrade; its history is checked with porcupine at the end.
	const linChannel = "upgrade-lin"
	pc.createChannel(t, linChannel)
	linKeys := []string{"k0", "k1", "k2", "k3"}

	seed := chaosSeed(t)
	led := &ledger{acked: map[string]string{}, unknown: map[string]string{}, refused: map[string]string{}}
	rec, stats := NewRecorder(), NewStats()
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writer(loadCtx, w, seed, cl, channel, led)
		}()
	}
	lin := &Workload{Channel: linChannel, Keys: linKeys, Clients: 4, Nodes: cl, Rec: rec, Stats: stats,
		Seed: seed, OpTimeout: 5 * time.Second, Think: 10 * time.Millisecond}
	wg.Add(1)
	go func() {
		defer wg.Done()
		lin.Run(loadCtx)
	}()
	defer func() {
		stopLoad()
		wg.Wait()
	}()
	waitAcked := func(n int) {
		t.Helper()
		testcluster.WaitFor(t, 60*time.Second, func() error {
			if got := led.ackedCount(); got < n {
				return fmt.Errorf("%d writes acknowledged, want %d (%s)", got, n, led.summary())
			}
			return nil
		})
	}
	clusterVersion := func(i int) (api.Status, error) {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return cl[i].Status(sctx)
	}
	waitAcked(50)

	// Mixed: the new node n1 knows the version and, leading the channel
	// and the meta group, holds back its hash checks. It has the lowest
	// server id, so it stands first when a leader's node is killed.
	newNode := 0
	for try := 0; ; try++ {
		st, err := clusterVersion(newNode)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ch, err := cl[newNode].Channel(cctx, channel)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if st.MetaLeader == "n1" && ch.Leader == "n1" {
			break
		}
		if try == 6 {
			t.Fatalf("n1 leads neither the channel (%q) nor the meta group (%q) after %d restarts of their leaders", ch.Leader, st.MetaLeader, try)
		}
		victim := st.MetaLeader
		if victim == "n1" || victim == "" {
			victim = ch.Leader
		}
		i := map[string]int{"n2": 1, "n3": 2}[victim]
		if i == 0 {
			t.Fatalf("no old node to restart: meta leader %q, channel leader %q", st.MetaLeader, ch.Leader)
		}
		t.Logf("%s leads the meta group, %s the channel: restart %s (old binary)", st.MetaLeader, ch.Leader, victim)
		pc.procs[i].kill(t)
		testcluster.WaitFor(t, 30*time.Second, func() error {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			ch, err := cl[newNode].Channel(sctx, channel)
			if err != nil {
				return err
			}
			st, err := cl[newNode].Status(sctx)
			if err != nil {
				return err
			}
			if ch.Leader == victim || ch.Leader == "" || st.MetaLeader == victim || st.MetaLeader == "" {
				return fmt.Errorf("meta leader %q, channel leader %q", st.MetaLeader, ch.Leader)
			}
			return nil
		})
		pc.procs[i].start(t)
		pc.waitReady(t, i)
	}
	testcluster.WaitFor(t, 30*time.Second, func() error {
		for _, line := range []string{"no hash checks until every node is upgraded", "no meta hash checks until every node is upgraded"} {
			if !logHas(pc.procs[newNode].logPath, line) {
				return fmt.Errorf("n1, leading, has not said %q", line)
			}
		}
		return nil
	})
	st, err := clusterVersion(newNode)
	if err != nil || st.ClusterVersion != 1 || st.SupportedVersion != fsm.Version {
		t.Fatalf("mixed cluster: status %+v, %v; want cluster version 1, supported %d", st, err, fsm.Version)
	}
	// n1's own version is in the registry only if a new node leads the
	// meta group when it registers: an old leader's records have no
	// version field.
	wantSupported(ctx, t, cl[newNode], map[string]int{"n1": fsm.Version, "n2": 1, "n3": 1})
	before := led.ackedCount()
	waitAcked(before + 50)
	noHashChecks(t, pc.procs[newNode].http, pc.token)

	// Upgrade the old nodes one at a time.
	for _, i := range []int{1, 2} {
		p := pc.procs[i]
		before := led.ackedCount()
		p.kill(t)
		if i == 2 {
			// The last old node is down (dead or suspect, not left): it
			// may come back old, so the version must not move.
			if st, err := clusterVersion(0); err != nil || st.ClusterVersion != 1 {
				t.Fatalf("with the last old node down: status %+v, %v; want cluster version 1", st, err)
			}
		}
		p.bin = newBin
		p.args = append(p.args, newFlags...)
		t.Logf("%s restarts with the new binary, %d writes acknowledged", p.name, before)
		p.start(t)
		pc.waitReady(t, i)
		waitAcked(before + 30)
		if i == 1 {
			if st, err := clusterVersion(0); err != nil || st.ClusterVersion != 1 {
				t.Fatalf("with n3 still old: status %+v, %v; want cluster version 1", st, err)
			}
			noHashChecks(t, pc.procs[newNode].http, pc.token)
		}
	}

	// Every node runs the new binary: version 2 everywhere, hash checks run.
	testcluster.WaitFor(t, 30*time.Second, func() error {
		for i := range pc.procs {
			st, err := clusterVersion(i)
			if err != nil {
				return err
			}
			if st.ClusterVersion != fsm.Version {
				return fmt.Errorf("%s: cluster version %d, want %d", pc.procs[i].name, st.ClusterVersion, fsm.Version)
			}
		}
		return nil
	})
	wantSupported(ctx, t, cl[0], map[string]int{"n1": fsm.Version, "n2": fsm.Version, "n3": fsm.Version})
	testcluster.WaitFor(t, 30*time.Second, func() error {
		var channelAgree, metaAgree float64
		for _, p := range pc.procs {
			channelAgree += scrape(t, p.http, pc.token, `shardnet_shard_hash_compares_total{outcome="agree"}`)
			metaAgree += scrape(t, p.http, pc.token, `shardnet_cluster_meta_hash_compares_total{outcome="agree"}`)
		}
		if channelAgree < 3 || metaAgree < 3 {
			return fmt.Errorf("hash comparisons that agreed: %v of the channel's, %v of the meta group's; want 3 of each", channelAgree, metaAgree)
		}
		return nil
	})
	for _, p := range pc.procs {
		for _, series := range []string{`shardnet_shard_hash_compares_total{outcome="mismatch"}`, `shardnet_cluster_meta_hash_compares_total{outcome="mismatch"}`} {
			if v := scrape(t, p.http, pc.token, series); v != 0 {
				t.Errorf("%s: %s = %v", p.name, series, v)
			}
		}
	}
	waitAcked(led.ackedCount() + 30)
	stopLoad()
	wg.Wait()
	verifyLedger(ctx, t, cl, channel, led)
	if err := RecordFinalReads(ctx, rec, cl[0], linChannel, linKeys); err != nil {
		t.Errorf("final reads of %s: %v", linChannel, err)
	}
	t.Logf("linearizability workload: %s", stats)
	if stats.Count("", "ok") < 100 {
		t.Errorf("only %d operations of the linearizability workload succeeded", stats.Count("", "ok"))
	}
	reportHistory(t, rec, seed)
	pc.checkLogs(t)
}

// buildOldShardnet builds oldCommit's binary, once per machine: it is kept
// in the temp dir under the commit's name. It takes the commit's files with
// git archive (no worktree to register or remove), and skips the test when
// git or the commit is not there (a shallow clone).
func buildOldShardnet(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(os.TempDir(), "shardnet-"+oldCommit[:12], "shardnet")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skipf("git is needed to build the old release %s: %v", oldCommit[:12], err)
	}
	if out, err := exec.Command(gitBin, "cat-file", "-e", oldCommit+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("commit %s is not in this clone (shallow?): %v %s", oldCommit[:12], err, out)
	}
	top, err := exec.Command(gitBin, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse --show-toplevel: %v", err)
	}
	src := t.TempDir()
	// From the top: git archive of a subdirectory holds only that subtree.
	archive := exec.Command("sh", "-c", `"$0" archive "$1" | tar -x -C "$2"`, gitBin, oldCommit, src)
	archive.Dir = strings.TrimSpace(string(top))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", oldCommit[:12], err, out)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := bin + ".tmp" + strconv.Itoa(os.Getpid())
	build := exec.Command("go", "build", "-o", tmp, "./cmd/shardnet")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the old release %s: %v\n%s", oldCommit[:12], err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// wantSupported checks every node's supported version in GET /v1/nodes.
func wantSupported(ctx context.Context, t *testing.T, c *api.Client, want map[string]int) {
	t.Helper()
	testcluster.WaitFor(t, 30*time.Second, func() error {
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		nodes, err := c.Nodes(nctx)
		if err != nil {
			return err
		}
		got := map[string]int{}
		for _, nd := range nodes {
			got[nd.ID] = nd.SupportedVersion
		}
		for id, v := range want {
			if got[id] != v {
				return fmt.Errorf("supported versions %v, want %v", got, want)
			}
		}
		return nil
	})
}

// noHashChecks fails when the node applied a channel or meta hash check:
// every node hosts the channel and the meta group, so a check proposed by
// any leader would be compared there.
func noHashChecks(t *testing.T, addr, token string) {
	t.Helper()
	for _, series := range []string{"shardnet_shard_hash_checks_total",
		`shardnet_shard_hash_compares_total{outcome="agree"}`, `shardnet_shard_hash_compares_total{outcome="undecided"}`,
		`shardnet_cluster_meta_hash_compares_total{outcome="agree"}`, `shardnet_cluster_meta_hash_compares_total{outcome="undecided"}`} {
		if v := scrape(t, addr, token, series); v != 0 {
			t.Fatalf("%s = %v before every node is upgraded", series, v)
		}
	}
}

// scrape reads one series of a node's /metrics; 0 when absent.
func scrape(t *testing.T, addr, token, series string) float64 {
	t.Helper()
	return testcluster.Metric(t, "http://"+addr, token, series)
}

func logHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}
