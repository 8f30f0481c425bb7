package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

const testToken = "bench-test-token"

// run runs cfg against the cluster through node 0, with the test's
// defaults: a count, a few connections, a duration that never ends it.
func run(t *testing.T, c *testcluster.Cluster, cfg Config) *Result {
	t.Helper()
	if cfg.Addrs == nil {
		cfg.Addrs = []string{c.Nodes[0].URL()}
	}
	cfg.Token = cmp.Or(cfg.Token, testToken)
	cfg.Conns = cmp.Or(cfg.Conns, 4)
	cfg.Duration = cmp.Or(cfg.Duration, 2*time.Minute)
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run %s: %v", cfg.Op, err)
	}
	t.Logf("%s: %d requests, %d errors %v, %.0f/s, p50 %.3f ms, p99 %.3f ms, %.0f µs CPU per request (the nodes' included)",
		res.Op, res.Requests, res.Errors, res.ErrorsByStatus, res.Throughput, res.Latency.P50, res.Latency.P99, res.ClientCPUusPerReq)
	return res
}

// wantClean checks a run of count requests: every one answered 2xx, its
// latency recorded. A cluster on a machine too busy to keep its Raft
// timings (under -race, or with other work beside it) answers a few writes
// 503 (a proposal timed out, a leader moved): those are tolerated, and must
// be counted under 503 with no latency, up to a quarter of the run.
func wantClean(t *testing.T, res *Result, count int64) {
	t.Helper()
	if busy := res.ErrorsByStatus["503"]; busy > 0 && busy == res.Errors && len(res.ErrorsByStatus) == 1 && busy <= count/4 {
		t.Logf("%s: %d of %d answered 503 by a busy cluster", res.Op, busy, count)
		count -= busy
	}
	if res.Requests != count+res.ErrorsByStatus["503"] || res.Errors != res.ErrorsByStatus["503"] || res.Hist.Count() != uint64(count) {
		t.Fatalf("%s: %d requests (%d errors %v, %d latencies), want %d without errors",
			res.Op, res.Requests, res.Errors, res.ErrorsByStatus, res.Hist.Count(), count)
	}
	if res.StoppedBy != "count" || res.Throughput <= 0 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
		t.Fatalf("%s: stopped by %s, throughput %v, latency %+v", res.Op, res.StoppedBy, res.Throughput, res.Latency)
	}
}

// listKeys returns every key of channel with its value's length.
func listKeys(t *testing.T, cl *api.Client, channel string) map[string]int {
	t.Helper()
	out := map[string]int{}
	after := ""
	for {
		page, err := cl.List(context.Background(), channel, "", after, 1000, api.Linearizable)
		if err != nil {
			t.Fatalf("list %s: %v", channel, err)
		}
		for _, kv := range page.Items {
			out[kv.Key] = len(kv.Value)
		}
		if page.Next == "" {
			return out
		}
		after = page.Next
	}
}

// One 3-node cluster for every case: starting one costs more than the
// cases themselves.
func TestAgainstCluster(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Token: testToken})
	t.Cleanup(c.Close)
	c.CreateChannel("bench", 3)
	admin := c.Client(0)

	t.Run("put and get by count", func(t *testing.T) {
		const keys, count = 40, 150
		res := run(t, c, Config{Op: OpPut, Keys: keys, Count: count, ValueSize: 100, Prefill: true})
		wantClean(t, res, count)
		got := listKeys(t, admin, "bench")
		if len(got) != keys {
			t.Fatalf("the channel holds %d keys after a prefill of %d: %v", len(got), keys, got)
		}
		for k := range keys {
			if n, ok := got[KeyName(k)]; !ok || n != 100 {
				t.Fatalf("key %s: present %v, %d bytes; want 100", KeyName(k), ok, n)
			}
		}
		wantClean(t, run(t, c, Config{Op: OpGet, Keys: keys, Count: count, Clients: 6}), count)
		wantClean(t, run(t, c, Config{Op: OpGet, Keys: keys, Count: count, Read: api.Stale}), count)
		wantClean(t, run(t, c, Config{Op: OpMixed, Keys: keys, Count: count, ReadRatio: 0.5, ValueSize: 100}), count)
		wantClean(t, run(t, c, Config{Op: OpTxn, Keys: keys, Count: 60, ValueSize: 100}), 60)
		if got := listKeys(t, admin, "bench"); len(got) != keys || got[KeyName(keys-1)] != 100 {
			t.Fatalf("after mixed and txn: %d keys, last %d bytes", len(got), got[KeyName(keys-1)])
		}
	})

	t.Run("put without prefill writes only its key space", func(t *testing.T) {
		res := run(t, c, Config{Op: OpPut, Channel: "bench", Keys: 1000, Count: 30, ValueSize: 7})
		wantClean(t, res, 30)
		seven := 0
		for k, n := range listKeys(t, admin, "bench") {
			if !strings.HasPrefix(k, "key-") || len(k) != len("key-0000000") {
				t.Fatalf("unexpected key %q", k)
			}
			if n == 7 {
				seven++
			}
		}
		if seven == 0 || seven > 30 {
			t.Fatalf("%d keys of 7 bytes after 30 puts", seven)
		}
	})

	t.Run("leader and follower targets", func(t *testing.T) {
		for _, target := range []Target{TargetLeader, TargetFollower} {
			before := c.WaitLeader("bench")
			res := run(t, c, Config{Op: OpGet, Keys: 40, Count: 20, Target: target})
			wantClean(t, res, 20)
			after := c.WaitLeader("bench")
			ep := res.Endpoints["bench"]
			if before != after || len(res.LeaderMoved) > 0 {
				t.Logf("the leader moved during the run (%s → %s): the target is not checked", before, after)
				continue
			}
			leaderURL := c.Node(before).URL()
			if target == TargetLeader && ep != leaderURL {
				t.Fatalf("target leader sent to %s; the leader %s is at %s", ep, before, leaderURL)
			}
			if target == TargetFollower {
				isNode := slices.ContainsFunc(c.Nodes, func(n *testcluster.Node) bool { return n.URL() == ep })
				if ep == leaderURL || !isNode {
					t.Fatalf("target follower sent to %s (leader %s at %s)", ep, before, leaderURL)
				}
			}
		}
	})

	t.Run("a bad token is counted as 401", func(t *testing.T) {
		res := run(t, c, Config{Op: OpPut, Keys: 10, Count: 25, Token: "not-the-token"})
		if res.Requests != 25 || res.Errors != 25 || res.ErrorsByStatus["401"] != 25 || res.Hist.Count() != 0 || res.Throughput != 0 {
			t.Fatalf("bad token: %d requests, %d errors %v, %d latencies, %v/s", res.Requests, res.Errors, res.ErrorsByStatus, res.Hist.Count(), res.Throughput)
		}
	})

	t.Run("a node that does not answer is a transport error", func(t *testing.T) {
		res := run(t, c, Config{Op: OpGet, Keys: 10, Count: 5, Addrs: []string{c.Nodes[0].URL(), "127.0.0.1:1"}})
		if res.Requests != 5 || res.ErrorsByStatus["transport"] == 0 || res.Errors != res.ErrorsByStatus["transport"] {
			t.Fatalf("half to a closed port: %d requests, errors %v", res.Requests, res.ErrorsByStatus)
		}
	})

	t.Run("files", func(t *testing.T) {
		res := run(t, c, Config{Op: OpFileGet, Keys: 8, Count: 20, ValueSize: 3000, Prefill: true})
		wantClean(t, res, 20)
		list, err := admin.ListFiles(context.Background(), "bench", "bench/", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Files) != 8 {
			t.Fatalf("%d files after a prefill of 8", len(list.Files))
		}
		for _, f := range list.Files {
			if f.Size != 3000 || !strings.HasPrefix(f.Path, "bench/key-") {
				t.Fatalf("file %s of %d bytes", f.Path, f.Size)
			}
		}
		// An upload is refused with 503 not_enough_holders when too few
		// replicas stored its chunks in time (a busy machine): that is
		// counted as an error by its status, not a failure of the run.
		res = run(t, c, Config{Op: OpFilePut, Keys: 8, Count: 10, ValueSize: 3000})
		if res.Requests != 10 || res.Errors != res.ErrorsByStatus["503"] || res.Hist.Count() != uint64(10-res.Errors) || res.Errors == 10 {
			t.Fatalf("file-put: %d requests, %d errors %v, %d latencies", res.Requests, res.Errors, res.ErrorsByStatus, res.Hist.Count())
		}
	})

	t.Run("many channels, created", func(t *testing.T) {
		res := run(t, c, Config{Op: OpPut, Channel: "multi", Channels: 3, Create: true, Keys: 12, Count: 40, Prefill: true, Target: TargetLeader})
		wantClean(t, res, 40)
		if len(res.Endpoints) != 3 {
			t.Fatalf("endpoints %v, want one per channel", res.Endpoints)
		}
		for i := range 3 {
			ch := fmt.Sprintf("multi-%d", i)
			got := listKeys(t, admin, ch)
			if len(got) != 4 {
				t.Fatalf("channel %s holds %d keys, want 4 of the 12", ch, len(got))
			}
			for k := range got {
				var n int
				if _, err := fmt.Sscanf(k, "key-%d", &n); err != nil || ChannelOf([]string{"multi-0", "multi-1", "multi-2"}, n) != ch {
					t.Fatalf("key %s is in channel %s", k, ch)
				}
			}
		}
	})

	t.Run("a missing channel stops the run before it starts", func(t *testing.T) {
		_, err := Run(context.Background(), Config{Op: OpPut, Addrs: []string{c.Nodes[0].URL()}, Token: testToken, Channel: "absent", Count: 1})
		if err == nil || !api.IsNotFound(err) {
			t.Fatalf("run against a missing channel: %v", err)
		}
	})

	t.Run("an interrupt ends the run with what it measured", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		res, err := Run(ctx, Config{Op: OpGet, Addrs: []string{c.Nodes[0].URL()}, Token: testToken, Keys: 40, Conns: 2,
			Rate: 50, Progress: &lineCounter{after: 1, cancel: cancel}})
		if err != nil {
			t.Fatal(err)
		}
		if res.StoppedBy != "interrupt" || res.Requests == 0 || res.Errors != res.ErrorsByStatus["503"] {
			t.Fatalf("interrupted run: stopped by %s, %d requests, %d errors", res.StoppedBy, res.Requests, res.Errors)
		}
	})
}

// lineCounter is a progress writer that cancels the run once a progress
// line shows at least after requests.
type lineCounter struct {
	after  int
	cancel context.CancelFunc
}

func (w *lineCounter) Write(p []byte) (int, error) {
	// "get    1s       50 req/s         50 requests ..."
	if f := strings.Fields(string(p)); len(f) > 5 && f[5] == "requests" {
		if n, err := strconv.Atoi(f[4]); err == nil && n >= w.after {
			w.cancel()
		}
	}
	return len(p), nil
}

func TestPickNode(t *testing.T) {
	ch := api.Channel{Name: "c", Leader: "n2", Voters: []string{"n1", "n2", "n3"}, Placement: []api.Replica{
		{NodeID: "n1", Voter: true, Healthy: true}, {NodeID: "n2", Voter: true, Healthy: true}, {NodeID: "n3", Voter: true, Healthy: false},
	}}
	for _, c := range []struct {
		target Target
		i      int
		want   string
	}{{TargetLeader, 0, "n2"}, {TargetFollower, 0, "n1"}, {TargetFollower, 1, "n1"}} {
		if got, err := pickNode(ch, c.target, c.i); err != nil || got != c.want {
			t.Errorf("%s #%d: %q %v, want %q", c.target, c.i, got, err, c.want)
		}
	}
	ch.Placement[0].Healthy = false
	if _, err := pickNode(ch, TargetFollower, 0); err == nil {
		t.Errorf("no healthy follower, yet one was picked")
	}
	ch.Leader = ""
	if _, err := pickNode(ch, TargetLeader, 0); err == nil {
		t.Errorf("no leader, yet one was picked")
	}
}

func TestConfigChecks(t *testing.T) {
	for _, cfg := range []Config{
		{Op: "frob", Addrs: []string{"x:1"}},
		{Op: OpPut},
		{Op: OpPut, Addrs: []string{"x:1"}, Target: "nearest"},
		{Op: OpGet, Addrs: []string{"x:1"}, Read: "strong"},
		{Op: OpMixed, Addrs: []string{"x:1"}, ReadRatio: 1.5},
		{Op: OpPut, Addrs: []string{"ftp://x:1"}},
		{Op: OpPut, Addrs: []string{"x:1"}, Rate: -1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "invalid configuration") {
			t.Errorf("%+v: %v, want a configuration error", cfg, err)
		}
	}
}

func TestKeyNames(t *testing.T) {
	for k, want := range map[int]string{0: "key-0000000", 1: "key-0000001", 9999: "key-0009999", 12345678: "key-12345678"} {
		if got := KeyName(k); got != want {
			t.Errorf("KeyName(%d) = %q, want %q", k, got, want)
		}
	}
	var l loop
	l.r = &runner{value64: []byte("dmFs")}
	if got, want := string(l.txnBody(3)), `{"compares":[{"key":"key-0000003","target":"value","result":"equal","value":"dmFs"}],"success":[{"op":"put","key":"key-0000003","value":"dmFs"}],"failure":[{"op":"put","key":"key-0000003","value":"dmFs"}]}`; got != want {
		t.Errorf("txn body\n%s\nwant\n%s", got, want)
	}
}
