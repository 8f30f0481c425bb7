package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/shardnet/shardnet/internal/testcluster"
)

// Nemesis injects a random schedule of faults into an in-process cluster,
// one fault at a time: it applies one, holds it, undoes it, pauses, and
// picks the next, until its context ends. The schedule is a function of Rng
// alone; what the cluster does meanwhile is not, so a seed replays the same
// kinds of faults in the same order, not the same interleaving.
//
// Network faults go through the transport's fault hook
// (testcluster.Options.Faults): they cut or slow Raft and forwarding traffic
// between nodes, never gossip (memberlist keeps its own ports, so
// partitioned nodes still look alive to each other there) nor the clients'
// HTTP connections. Disk faults slow the fsyncs of one node's Raft log
// store (testcluster.Cluster.SlowDisk).
type Nemesis struct {
	C       *testcluster.Cluster
	GroupID uint64 // the channel's Raft group, to find its leader
	Rng     *rand.Rand
	Rec     *Recorder // faults are noted for the visualization
	Logf    func(format string, args ...any)

	// Hold and Gap bound how long a fault lasts and the pause between two
	// (uniform in [Min, Max)). Defaults: 0.5-3 s and 0.2-1.5 s.
	HoldMin, HoldMax time.Duration
	GapMin, GapMax   time.Duration

	counts  map[string]int
	stopped map[int]bool // nodes killed or stopped and not yet restarted
}

// The faults, with their weights.
var faultKinds = []struct {
	name   string
	weight int
}{
	{"kill-leader", 3},          // SIGKILL-like crash of the channel leader, restart after the hold
	{"kill-follower", 2},        // the same for a follower
	{"stop-leader", 1},          // graceful shutdown (leadership transfer), restart
	{"isolate-leader", 3},       // the leader alone on the minority side
	{"isolate-follower", 2},     // a follower alone on the minority side
	{"cut-link", 2},             // leader and one follower cannot talk; both still reach the third node
	{"delay", 2},                // 10-250 ms added to every request between two nodes, or all pairs
	{"isolate-kill-leader", 1},  // isolate the leader, crash it while isolated, heal, restart
	{"kill-leader-follower", 1}, // crash two nodes: no quorum until one is back
	{"slow-disk", 2},            // 50-200 ms added to every log fsync of the leader or a follower
	{"freeze-leader", 2},        // the leader's node stops answering on its cluster port, connections left open (SIGSTOP as peers see it), then goes on
	{"freeze-follower", 1},      // the same for a follower
}

// Run applies faults until ctx ends, then undoes the one in force. It must
// run on the test's goroutine (restarts may fail the test).
func (n *Nemesis) Run(ctx context.Context) {
	n.defaults()
	total := 0
	for _, f := range faultKinds {
		total += f.weight
	}
	for ctx.Err() == nil {
		pick := n.Rng.IntN(total)
		var name string
		for _, f := range faultKinds {
			if pick < f.weight {
				name = f.name
				break
			}
			pick -= f.weight
		}
		n.apply(ctx, name)
		n.sleep(ctx, n.between(n.GapMin, n.GapMax))
	}
}

// Counts returns how many faults of each kind were injected.
func (n *Nemesis) Counts() map[string]int { return n.counts }

// Total is the number of faults injected.
func (n *Nemesis) Total() int {
	t := 0
	for _, v := range n.counts {
		t += v
	}
	return t
}

// Summary lists the faults injected, by kind.
func (n *Nemesis) Summary() string {
	var parts []string
	for k, v := range n.counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (n *Nemesis) defaults() {
	if n.HoldMax == 0 {
		n.HoldMin, n.HoldMax = 500*time.Millisecond, 3*time.Second
	}
	if n.GapMax == 0 {
		n.GapMin, n.GapMax = 200*time.Millisecond, 1500*time.Millisecond
	}
	if n.counts == nil {
		n.counts = map[string]int{}
		n.stopped = map[int]bool{}
	}
	if n.Logf == nil {
		n.Logf = func(string, ...any) {}
	}
}

func (n *Nemesis) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(n.Rng.Int64N(int64(hi-lo)))
}

// sleep waits d, or less when ctx ends: a fault's hold is cut short at the
// end of the run, never skipped.
func (n *Nemesis) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Leader returns the index of the running node whose replica of the group
// leads in the highest term, or -1.
func (n *Nemesis) Leader() int {
	best, bestTerm := -1, uint64(0)
	for i, nd := range n.C.Nodes {
		a := nd.Agent()
		if a == nil {
			continue
		}
		rep, ok := a.Node.Shards().Replica(n.GroupID)
		if !ok {
			continue
		}
		info := rep.Info()
		if info.State == "Leader" && info.Term >= bestTerm {
			best, bestTerm = i, info.Term
		}
	}
	return best
}

// leaderOrAny is the leader, or a random running node when there is none.
func (n *Nemesis) leaderOrAny() int {
	if l := n.Leader(); l >= 0 {
		return l
	}
	return n.randomExcept(-1)
}

// randomExcept returns a random running node other than skip.
func (n *Nemesis) randomExcept(skip int) int {
	var cand []int
	for i, nd := range n.C.Nodes {
		if i != skip && nd.Agent() != nil {
			cand = append(cand, i)
		}
	}
	if len(cand) == 0 {
		return -1
	}
	return cand[n.Rng.IntN(len(cand))]
}

// followerOf returns a random running node other than leader that holds a
// replica of the group (a slow disk elsewhere would not touch the group),
// or any other running node when none does.
func (n *Nemesis) followerOf(leader int) int {
	var cand []int
	for i, nd := range n.C.Nodes {
		if a := nd.Agent(); i != leader && a != nil {
			if _, ok := a.Node.Shards().Replica(n.GroupID); ok {
				cand = append(cand, i)
			}
		}
	}
	if len(cand) == 0 {
		return n.randomExcept(leader)
	}
	return cand[n.Rng.IntN(len(cand))]
}

func (n *Nemesis) apply(ctx context.Context, name string) {
	c := n.C
	hold := n.between(n.HoldMin, n.HoldMax)
	start := n.Rec.Now()
	var desc string
	switch name {
	case "kill-leader", "kill-follower", "stop-leader":
		l := n.leaderOrAny()
		victim := l
		if name == "kill-follower" {
			victim = n.randomExcept(l)
		}
		if victim < 0 {
			return
		}
		desc = fmt.Sprintf("%s %s", name, c.Nodes[victim].Name)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		if name == "stop-leader" {
			c.Stop(victim)
		} else {
			c.Kill(victim)
		}
		n.stopped[victim] = true
		n.sleep(ctx, hold)
		n.restart(victim)

	case "kill-leader-follower":
		l := n.leaderOrAny()
		f := n.randomExcept(l)
		if l < 0 || f < 0 {
			return
		}
		desc = fmt.Sprintf("%s %s+%s", name, c.Nodes[l].Name, c.Nodes[f].Name)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		c.Kill(l)
		c.Kill(f)
		n.stopped[l], n.stopped[f] = true, true
		n.sleep(ctx, hold)
		// Bring them back one after the other, in random order.
		if n.Rng.IntN(2) == 0 {
			l, f = f, l
		}
		n.restart(l)
		n.sleep(ctx, n.between(0, hold))
		n.restart(f)

	case "isolate-leader", "isolate-follower":
		l := n.leaderOrAny()
		victim := l
		if name == "isolate-follower" {
			victim = n.randomExcept(l)
		}
		if victim < 0 {
			return
		}
		desc = fmt.Sprintf("%s %s", name, c.Nodes[victim].Name)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		c.Isolate(victim)
		n.sleep(ctx, hold)
		c.Heal()

	case "isolate-kill-leader":
		l := n.leaderOrAny()
		if l < 0 {
			return
		}
		desc = fmt.Sprintf("%s %s", name, c.Nodes[l].Name)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		c.Isolate(l)
		n.sleep(ctx, hold/2)
		c.Kill(l)
		n.stopped[l] = true
		n.sleep(ctx, hold/2)
		c.Heal()
		n.restart(l)

	case "freeze-leader", "freeze-follower":
		victim := n.leaderOrAny()
		if name == "freeze-follower" {
			victim = n.followerOf(victim)
		}
		if victim < 0 {
			return
		}
		desc = fmt.Sprintf("%s %s", name, c.Nodes[victim].Name)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		c.Freeze(victim)
		n.sleep(ctx, hold)
		c.Thaw(victim)

	case "cut-link":
		l := n.leaderOrAny()
		f := n.randomExcept(l)
		if l < 0 || f < 0 {
			return
		}
		desc = fmt.Sprintf("%s %s-%s", name, c.Nodes[l].Name, c.Nodes[f].Name)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		c.Cut(l, f)
		n.sleep(ctx, hold)
		c.Heal()

	case "delay":
		d := n.between(10*time.Millisecond, 250*time.Millisecond)
		var pairs [][2]int
		if n.Rng.IntN(2) == 0 {
			a := n.Rng.IntN(len(c.Nodes))
			b := (a + 1 + n.Rng.IntN(len(c.Nodes)-1)) % len(c.Nodes)
			pairs = append(pairs, [2]int{a, b})
			desc = fmt.Sprintf("delay %v %s-%s", d, c.Nodes[a].Name, c.Nodes[b].Name)
		} else {
			for a := range c.Nodes {
				for b := a + 1; b < len(c.Nodes); b++ {
					pairs = append(pairs, [2]int{a, b})
				}
			}
			desc = fmt.Sprintf("delay %v all links", d)
		}
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		for _, p := range pairs {
			c.Delay(p[0], p[1], d)
		}
		n.sleep(ctx, hold)
		c.Heal()

	case "slow-disk":
		d := n.between(50*time.Millisecond, 200*time.Millisecond)
		victim := n.leaderOrAny()
		role := "leader"
		if n.Rng.IntN(2) == 0 {
			victim, role = n.followerOf(victim), "follower"
		}
		if victim < 0 {
			return
		}
		desc = fmt.Sprintf("%s %v %s (%s)", name, d, c.Nodes[victim].Name, role)
		n.Logf("nemesis at %v: %s for %v", time.Duration(start).Round(100*time.Millisecond), desc, hold)
		c.SlowDisk(victim, d)
		n.sleep(ctx, hold)
		c.SlowDisk(victim, 0)

	default:
		panic("chaos: unknown fault " + name)
	}
	n.counts[name]++
	n.Rec.Note(start, n.Rec.Now(), desc)
}

func (n *Nemesis) restart(i int) {
	n.C.Start(i)
	delete(n.stopped, i)
}

// Recover heals the network and the disks and starts every node the
// nemesis left stopped.
func (n *Nemesis) Recover() {
	n.defaults()
	n.C.Heal()
	for i := range n.stopped {
		n.restart(i)
	}
}
