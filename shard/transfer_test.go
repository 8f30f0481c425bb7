package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardnet/shardnet/fsm"
)

// Writes proposed on a leader while it hands its leadership to another
// replica are refused by raft before they are appended. They must come back
// as a redirect to the new leader (or no leader yet), which the caller may
// resend, never as "outcome unknown".
func TestProposeDuringLeadershipTransfer(t *testing.T) {
	_, reps, leader := startGroup(t, 13)
	r := reps[leader]
	var (
		stop                         atomic.Bool
		ok, moved, unknown, other    atomic.Int64
		wg                           sync.WaitGroup
		firstUnknownMu               sync.Mutex
		firstUnknown, firstOtherErrs error
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && i < 100000; i++ {
				cmd, _ := fsm.Encode(&fsm.Put{Key: fmt.Appendf(nil, "w%d-%d", w, i), Value: []byte("v")})
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := r.Propose(ctx, cmd)
				cancel()
				var re *RedirectError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &re) || errors.Is(err, ErrNoLeader):
					moved.Add(1)
					time.Sleep(time.Millisecond)
				case errors.Is(err, ErrOutcomeUnknown):
					unknown.Add(1)
					firstUnknownMu.Lock()
					if firstUnknown == nil {
						firstUnknown = err
					}
					firstUnknownMu.Unlock()
				default:
					other.Add(1)
					firstUnknownMu.Lock()
					if firstOtherErrs == nil {
						firstOtherErrs = err
					}
					firstUnknownMu.Unlock()
				}
			}
		}()
	}
	// Let the writers get going, then hand the leadership over.
	waitFor(t, 5*time.Second, func() error {
		if ok.Load() < 50 {
			return errors.New("writers not started")
		}
		return nil
	})
	if err := r.Raft().LeadershipTransfer().Error(); err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("leadership transfer: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("writes: %d ok, %d redirected, %d outcome unknown, %d other errors", ok.Load(), moved.Load(), unknown.Load(), other.Load())
	if unknown.Load() > 0 {
		t.Fatalf("%d writes refused during the transfer answered outcome unknown (first: %v)", unknown.Load(), firstUnknown)
	}
	if other.Load() > 0 {
		t.Fatalf("%d writes failed otherwise (first: %v)", other.Load(), firstOtherErrs)
	}
	if moved.Load() == 0 {
		t.Fatal("no write was redirected: the transfer did not happen under the writers")
	}
}
