package chaos

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// A paused leader serves no stale read. Three real agent processes; one
// writer counts a key up (each value written once it knows the previous
// was acknowledged), readers read it through every node, the paused one
// included. The channel's leader is stopped with SIGSTOP (a long GC pause,
// a VM freeze), a new leader takes writes, and the old one is resumed with
// SIGCONT, its sockets full of answers to messages it sent before the
// pause and of reads sent to it during the pause. No read may return a
// count below one whose write was acknowledged before the read was sent.
//
// raft's VerifyLeader alone let the resumed leader count those old answers
// as a confirmation of its leadership (shard/confirm.go).
func TestPausedLeaderServesNoStaleRead(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs real processes")
	}
	bin := buildShardnet(t)
	pc := startProcCluster(t, bin, 3)
	cl := pc.clients()
	const channel, key = "paused", "count"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pc.createChannel(t, channel)

	start := time.Now()
	var (
		mu    sync.Mutex
		acked []ackedCount // in the order acknowledged
		reads []readCount
	)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	paused := make(chan int, 1) // the paused node, while it is paused
	wg.Add(1)
	go func() { // the writer: through any node but the paused one
		defer wg.Done()
		next := 1
		for i := 0; loadCtx.Err() == nil; i++ {
			node := i % len(cl)
			select {
			case p := <-paused:
				paused <- p
				if node == p {
					node = (node + 1) % len(cl)
				}
			default:
			}
			octx, ocancel := context.WithTimeout(loadCtx, 2*time.Second)
			_, err := cl[node].Put(octx, channel, key, []byte(strconv.Itoa(next)), api.PutOptions{})
			ocancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, ackedCount{value: next, at: time.Since(start)})
				mu.Unlock()
			}
			next++ // a failed write may have been applied: never reuse its value
		}
	}()
	for r := range 6 {
		wg.Add(1)
		go func() { // a reader: through every node in turn, the paused one too
			defer wg.Done()
			for i := r; loadCtx.Err() == nil; i++ {
				node := i % len(cl)
				sent := time.Since(start)
				octx, ocancel := context.WithTimeout(loadCtx, 15*time.Second)
				v, _, err := cl[node].Get(octx, channel, key, api.GetOptions{})
				ocancel()
				if err != nil {
					continue
				}
				n, perr := strconv.Atoi(string(v))
				if perr != nil {
					t.Errorf("read %q", v)
					continue
				}
				mu.Lock()
				reads = append(reads, readCount{value: n, sent: sent, node: pc.procs[node].name})
				mu.Unlock()
			}
		}()
	}
	waitCount := func(n int, what string) {
		t.Helper()
		testcluster.WaitFor(t, 60*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(acked) < n {
				return fmt.Errorf("%d writes acknowledged, want %d %s", len(acked), n, what)
			}
			return nil
		})
	}

	const pauses = 3
	for round := range pauses {
		mu.Lock()
		base := len(acked)
		mu.Unlock()
		waitCount(base+50, "before the pause")
		ch, err := cl[0].Channel(ctx, channel)
		if err != nil {
			t.Fatal(err)
		}
		victim := slices.IndexFunc(pc.procs, func(p *proc) bool { return p.name == ch.Leader })
		if victim < 0 {
			t.Fatalf("leader %q is not a node", ch.Leader)
		}
		p := pc.procs[victim]
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		paused <- victim
		mu.Lock()
		base = len(acked)
		mu.Unlock()
		t.Logf("round %d: SIGSTOP the leader %s at %v", round+1, p.name, time.Since(start).Round(time.Millisecond))
		waitCount(base+100, "by a new leader while the old one is paused")
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		<-paused
		t.Logf("round %d: SIGCONT %s at %v", round+1, p.name, time.Since(start).Round(time.Millisecond))
	}
	mu.Lock()
	base := len(acked)
	mu.Unlock()
	waitCount(base+100, "after the last resume")
	stopLoad()
	wg.Wait()

	// Every read must return at least the highest count acknowledged
	// before it was sent (counts are acknowledged in increasing order).
	mu.Lock()
	defer mu.Unlock()
	stale, byNode := 0, map[string]int{}
	for _, rd := range reads {
		i, _ := slices.BinarySearchFunc(acked, rd.sent, func(a ackedCount, t time.Duration) int {
			if a.at < t {
				return -1
			}
			return 1
		})
		if i == 0 {
			continue // nothing acknowledged before this read
		}
		if floor := acked[i-1]; rd.value < floor.value {
			stale++
			if stale <= 5 {
				t.Errorf("stale read through %s sent at %v: count %d, but %d was acknowledged at %v",
					rd.node, rd.sent, rd.value, floor.value, floor.at)
			}
		}
		byNode[rd.node]++
	}
	if stale > 0 {
		t.Errorf("%d of %d reads returned a count older than an acknowledged write", stale, len(reads))
	}
	t.Logf("%d writes acknowledged, %d reads checked (by node: %v)", len(acked), len(reads), byNode)
	if len(byNode) < 3 {
		t.Errorf("reads succeeded through %d nodes only: %v", len(byNode), byNode)
	}
}

type ackedCount struct {
	value int
	at    time.Duration
}

type readCount struct {
	value int
	sent  time.Duration
	node  string
}
