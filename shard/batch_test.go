package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard/logstore"
)

// Many concurrent proposals on one group go to raft in fewer batches than
// proposals, and each proposer gets its own command's result.
func TestConcurrentProposalsShareBatches(t *testing.T) {
	_, reps, leader := startGroup(t, 11)
	r := reps[leader]
	const writers, each = 32, 10
	var (
		mu      sync.Mutex
		indexes = map[string]uint64{}
		wg      sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("w%02d-%d", w, i)
				cmd, err := fsm.Encode(&fsm.Put{Key: []byte(key), Value: []byte(key)})
				if err != nil {
					t.Error(err)
					return
				}
				res, err := r.Propose(context.Background(), cmd)
				if err != nil {
					t.Errorf("propose %s: %v", key, err)
					return
				}
				mu.Lock()
				indexes[key] = res.Index
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[uint64]string{}
	for key, idx := range indexes {
		if other, dup := seen[idx]; dup {
			t.Fatalf("%s and %s were both answered with index %d", key, other, idx)
		}
		seen[idx] = key
		e, found, err := r.FSM().Get([]byte(key))
		if err != nil || !found {
			t.Fatalf("get %s: found=%v err=%v", key, found, err)
		}
		if e.ModifyIndex != idx || string(e.Value) != key {
			t.Fatalf("%s: stored at index %d with %q, its proposer was told %d", key, e.ModifyIndex, e.Value, idx)
		}
	}
	proposals, batches := uint64(writers*each), r.batch.batches.Load()
	t.Logf("%d proposals in %d batches", proposals, batches)
	if batches == 0 || batches > proposals*3/4 {
		t.Fatalf("%d proposals went to raft in %d batches: concurrent proposals are not batched", proposals, batches)
	}
}

// A proposal whose caller gives up while it waits behind a batch in flight
// is answered at once, is never sent, and does not hold up later ones.
func TestQueuedProposalGivesUpUnsent(t *testing.T) {
	slow := logstore.NewSlowFS()
	_, reps, leader := startGroupFS(t, 12, fastTiming(), slow)
	r := reps[leader]
	put(t, r, "warm", "up")

	// Appends now take 400 ms to sync: the first proposal holds the window.
	slow.SetSyncDelay(400 * time.Millisecond)
	first := make(chan error, 1)
	go func() {
		cmd, _ := fsm.Encode(&fsm.Put{Key: []byte("first"), Value: []byte("1")})
		_, err := r.Propose(context.Background(), cmd)
		first <- err
	}()
	waitFor(t, 5*time.Second, func() error {
		if r.batch.batches.Load() < 2 {
			return errors.New("first proposal not sent yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cmd, _ := fsm.Encode(&fsm.Put{Key: []byte("gave-up"), Value: []byte("x")})
	start := time.Now()
	_, err := r.Propose(ctx, cmd)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued proposal past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > 300*time.Millisecond {
		t.Fatalf("the caller waited %v for a proposal it gave up on after 50 ms", waited)
	}
	if err := <-first; err != nil {
		t.Fatalf("first proposal: %v", err)
	}
	slow.SetSyncDelay(0)
	put(t, r, "after", "y")
	if _, found, _ := r.FSM().Get([]byte("gave-up")); found {
		t.Fatal("a proposal its caller gave up on while queued was applied")
	}
	if _, found, _ := r.FSM().Get([]byte("first")); !found {
		t.Fatal("the first proposal was acknowledged but is not applied")
	}
}
