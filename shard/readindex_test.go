package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// The read index is the leader's commit index, and the leader waits for its
// own state machine to reach it like any follower: with the leader's state
// machine held back while a follower applies a new entry, a linearizable
// read on the leader cannot be served (its context ends) until the leader
// applied it too, and the follower, which has, may serve it at once.
func TestReadIndexIsTheCommitIndex(t *testing.T) {
	_, reps, leader := startGroup(t, 9)
	lr, fr := reps[leader], reps[(leader+1)%3]
	put(t, lr, "k", "v1")
	if err := lr.ReadBarrier(context.Background(), Linearizable); err != nil { // the term's barrier
		t.Fatal(err)
	}
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	lr.FSM().SetApplyHook(func(first, last uint64) { <-hold })
	t.Cleanup(func() { release(); lr.FSM().SetApplyHook(nil) })
	done := make(chan struct{})
	go func() { defer close(done); put(t, lr, "k", "v2") }()
	var applied uint64
	waitFor(t, 10*time.Second, func() error {
		applied = fr.FSM().Applied()
		if e, ok, _ := fr.FSM().Get([]byte("k")); !ok || string(e.Value) != "v2" {
			return fmt.Errorf("follower applied %d, k = %q", applied, e.Value)
		}
		return nil
	})
	idx, err := lr.ReadIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if idx < applied {
		t.Fatalf("read index %d is below what a follower applied (%d)", idx, applied)
	}
	if err := fr.WaitIndex(context.Background(), idx); err != nil {
		t.Fatalf("follower wait for read index %d: %v", idx, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err = lr.ReadBarrier(ctx, Linearizable)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read barrier on the leader whose state machine is behind (%d < %d): %v, want its context's end",
			lr.FSM().Applied(), applied, err)
	}
	release()
	<-done
	if err := lr.ReadBarrier(context.Background(), Linearizable); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := lr.FSM().Get([]byte("k")); string(e.Value) != "v2" {
		t.Fatalf("leader reads k = %q after its barrier", e.Value)
	}
}
