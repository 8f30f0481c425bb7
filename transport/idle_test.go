//go:build linux

package transport

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestIdleCost measures what idle groups cost over this transport, in the
// setup of docs/raft-notes.md "R9" (3 replicas per group, all in one process,
// InmemStore, no-op load): CPU, goroutines, heap and RPCs over 10 s. It is a
// measurement, not a check, and is skipped unless asked for:
//
//	TRANSPORT_IDLE_GROUPS=333 go test ./transport -run IdleCost -v
//	TRANSPORT_IDLE_GROUPS=333 TRANSPORT_IDLE_SLOW=1 go test ./transport -run IdleCost -v
//
// TRANSPORT_IDLE_SLOW sets HB=ET=Lease=CommitTimeout=3s ("slow" in docs/raft-notes.md "R9").
func TestIdleCost(t *testing.T) {
	groups, _ := strconv.Atoi(os.Getenv("TRANSPORT_IDLE_GROUPS"))
	if groups <= 0 {
		t.Skip("set TRANSPORT_IDLE_GROUPS to measure the idle cost of that many 3-replica groups")
	}
	tweak := func(c *raft.Config) {
		d := raft.DefaultConfig()
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, c.CommitTimeout =
			d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout, d.CommitTimeout
		if os.Getenv("TRANSPORT_IDLE_SLOW") != "" {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, c.CommitTimeout =
				3*time.Second, 3*time.Second, 3*time.Second, 3*time.Second
		}
	}
	gids := make([]uint64, groups)
	for i := range gids {
		gids[i] = uint64(i + 1)
	}
	c := newRaftCluster(t, 3, gids, tweak)
	c.waitLeaders(5 * time.Minute)

	rpcs := func() float64 {
		var s float64
		for _, n := range c.nodes {
			s += n.metric(t, "shardnet_transport_rpcs_sent_total")
		}
		return s
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	const window = 10 * time.Second
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cpu0, rpc0, start := cpu(), rpcs(), time.Now()
	<-time.After(window) // the measurement window itself
	elapsed := time.Since(start)
	cpuUsed, sent := cpu()-cpu0, rpcs()-rpc0
	leaders := 0
	for gid := range c.groups {
		if c.leader(gid) != nil {
			leaders++
		}
	}
	t.Logf("%d groups (%d replicas): CPU %.1f%% of one core, %d goroutines, heap in use %d MB, %.0f RPC/s (%.2f per follower), %d/%d groups with a leader",
		groups, 3*groups, 100*cpuUsed.Seconds()/elapsed.Seconds(), runtime.NumGoroutine(), ms.HeapInuse>>20,
		sent/elapsed.Seconds(), sent/elapsed.Seconds()/float64(2*groups), leaders, groups)
}
