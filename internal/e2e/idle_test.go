package e2e

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// TestIdleCost measures what idle channels cost: SHARDNET_IDLE_CHANNELS
// channels of 3 replicas on a 3-node in-process cluster with the production
// Raft timers, then the process CPU and heap over 10 idle seconds, then how
// long a restarted node takes to serve every channel again. A measurement,
// not a check: it runs only when asked and asserts only that everything
// came up. SHARDNET_IDLE_HASH_CHECK sets the hash check interval (a
// duration, or off; default 5m) and the test reports the checks proposed
// and compared while it measured.
//
//	SHARDNET_IDLE_CHANNELS=1000 [SHARDNET_IDLE_TIMERS=3s] [SHARDNET_IDLE_HASH_CHECK=10s] go test -run TestIdleCost -v -timeout 30m ./internal/e2e/
func TestIdleCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SHARDNET_IDLE_CHANNELS"))
	if n <= 0 {
		t.Skip("set SHARDNET_IDLE_CHANNELS=N to measure N idle channels")
	}
	timing := shard.DefaultRaftTiming()
	if d, err := time.ParseDuration(os.Getenv("SHARDNET_IDLE_TIMERS")); err == nil {
		// e.g. 3s: heartbeat, election and commit timeouts (the prober
		// keeps failover fast whatever they are).
		timing.HeartbeatTimeout, timing.ElectionTimeout, timing.CommitTimeout = d, d, d
		// The lease must outlast the leader's heartbeat interval (HB/10 to
		// HB/5) or leaders step down over and over.
		timing.LeaderLeaseTimeout = d / 2
	}
	var hashCheck time.Duration
	switch v := os.Getenv("SHARDNET_IDLE_HASH_CHECK"); v {
	case "":
	case "off":
		hashCheck = -1
	default:
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SHARDNET_IDLE_HASH_CHECK: %v", err)
		}
		hashCheck = d
	}
	c := testcluster.New(t, testcluster.Options{Core: 3, ChannelRaft: timing, HashCheckInterval: hashCheck})
	ctx := context.Background()
	start := time.Now()
	for i := range n {
		name := fmt.Sprintf("idle-%04d", i)
		c.WaitFor(60*time.Second, func() error {
			_, err := c.Client(i%3).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: 3})
			if api.IsConflict(err) {
				return nil
			}
			return err
		})
	}
	t.Logf("created %d channels in %v", n, time.Since(start))
	leaders := func() int {
		total := 0
		for _, nd := range c.Nodes {
			for _, r := range nd.Agent().Node.Shards().Replicas() {
				if r.Raft().State().String() == "Leader" {
					total++
				}
			}
		}
		return total
	}
	c.WaitFor(10*time.Minute, func() error {
		if l := leaders(); l < n {
			return fmt.Errorf("%d of %d groups have a leader", l, n)
		}
		return nil
	})
	t.Logf("all %d groups led %v after the first create", n, time.Since(start))
	time.Sleep(5 * time.Second) // let the creation traffic drain before measuring idle
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if path := os.Getenv("SHARDNET_IDLE_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	hashMetrics := func() (checks, compares, skipped float64) {
		for i := range c.Nodes {
			checks += metric(t, c, i, "shardnet_shard_hash_checks_total")
			compares += metric(t, c, i, `shardnet_shard_hash_compares_total{outcome="agree"}`)
			skipped += metric(t, c, i, "shardnet_cluster_hash_compares_skipped_total")
		}
		return checks, compares, skipped
	}
	checks0, compares0, skipped0 := hashMetrics()
	io0 := procIO(t)
	cpu0 := cpuTime()
	time.Sleep(10 * time.Second)
	cpu := cpuTime() - cpu0
	io1 := procIO(t)
	checks1, compares1, skipped1 := hashMetrics()
	pprof.StopCPUProfile()
	runtime.ReadMemStats(&ms)
	t.Logf("timers: heartbeat %v, election %v, commit %v", timing.HeartbeatTimeout, timing.ElectionTimeout, timing.CommitTimeout)
	t.Logf("hash checks (interval %v; 0: the default): %.0f proposed, %.0f replica comparisons agreed and %.0f skipped in the 10 s",
		hashCheck, checks1-checks0, compares1-compares0, skipped1-skipped0)
	t.Logf("I/O in the 10 s: %d KiB written to storage, %d KiB read from it, %d write syscalls (/proc/self/io: write_bytes, read_bytes, syscw)",
		(io1["write_bytes"]-io0["write_bytes"])>>10, (io1["read_bytes"]-io0["read_bytes"])>>10, io1["syscw"]-io0["syscw"])
	t.Logf("idle: %d replicas in one process: %.1f%% of one core, heap in use %d MiB (%d KiB per replica), %d goroutines",
		3*n, 100*cpu.Seconds()/10, ms.HeapInuse>>20, ms.HeapInuse/1024/uint64(3*n), runtime.NumGoroutine())

	// A restarted node serves every one of its replicas again.
	c.Stop(1)
	restart := time.Now()
	c.Start(1)
	c.WaitFor(5*time.Minute, func() error {
		a := c.Nodes[1].Agent()
		ready := 0
		for _, r := range a.Node.Shards().Replicas() {
			if info := r.Info(); info.Leader != "" {
				ready++
			}
		}
		if ready < n {
			return fmt.Errorf("%d of %d replicas on the restarted node know a leader", ready, n)
		}
		return nil
	})
	t.Logf("restarted node with %d replicas: all know their leader after %v", n, time.Since(restart))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procIO reads this process's I/O counters (Linux; empty elsewhere).
func procIO(t *testing.T) map[string]uint64 {
	out := map[string]uint64{}
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Logf("no I/O counters: %v", err)
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			out[k] = n
		}
	}
	return out
}
