package procs

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestDecider(t *testing.T) {
	d := decider{low: 0.3, high: 0.6, settle: 3}
	steps := []struct {
		share  float64
		change bool
		single bool
	}{
		{0.1, false, false},
		{0.1, false, false},
		{0.5, false, false}, // busy: the count starts over
		{0.1, false, false},
		{0.29, false, false},
		{0.2, true, true},  // three idle seconds in a row
		{0.5, false, true}, // between the thresholds: stays
		{0.9, true, false}, // busy at once
		{0.1, false, false},
	}
	for i, s := range steps {
		if got := d.step(s.share); got != s.change || d.single != s.single {
			t.Fatalf("step %d (share %v): change %v single %v, want %v %v", i, s.share, got, d.single, s.change, s.single)
		}
	}
}

// Run drops to one processor while the (simulated) process is idle, takes
// Go's default back as soon as it is busy, and gives it back when stopped.
func TestRunFollowsTheLoad(t *testing.T) {
	if !Enabled() {
		t.Skip("GOMAXPROCS is set, or one core: the controller does nothing")
	}
	want := runtime.GOMAXPROCS(0)
	var busy atomic.Bool
	var cpu atomic.Int64 // simulated CPU time: 0 or 90 % of wall time
	last := time.Now()
	clock := func() time.Duration {
		now := time.Now()
		if busy.Load() {
			cpu.Add(int64(now.Sub(last)) * 9 / 10)
		}
		last = now
		return time.Duration(cpu.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Every: 20 * time.Millisecond, Settle: 3, CPU: clock})
	}()
	wait := func(what string, procs int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.GOMAXPROCS(0) != procs {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS %d, want %d", what, runtime.GOMAXPROCS(0), procs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("idle", 1)
	busy.Store(true)
	wait("busy", want)
	busy.Store(false)
	wait("idle again", 1)
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("after Run returned: GOMAXPROCS %d, want Go's default %d", got, want)
	}
}
