package e2e

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// (e) Linearizable reads never return stale data across a leader change: a
// read that starts after a write was acknowledged sees that write or a later
// one, whichever node serves it, while the leader is killed mid-run.
func TestLinearizableReadsAcrossLeaderChange(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("lin", 3)
	var acked atomic.Int64 // highest counter value acknowledged
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	wg.Add(1)
	go func() { // the single writer: 1, 2, 3, ... (bounded)
		defer wg.Done()
		node := 0
		for v := int64(1); v <= 5000; v++ {
			for {
				select {
				case <-stop:
					return
				default:
				}
				node = (node + 1) % 3
				_, err := c.Client(node).Put(ctx, "lin", "counter", []byte(strconv.FormatInt(v, 10)), api.PutOptions{})
				if err == nil {
					acked.Store(v)
					break
				}
				if api.IsOutcomeUnknown(err) {
					// It may have been applied: never write v again with
					// another meaning; move on to v+1.
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	var stale, reads atomic.Int64
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				floor := acked.Load()
				b, _, err := c.Client((r+i)%3).Get(ctx, "lin", "counter", api.GetOptions{})
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				got, _ := strconv.ParseInt(string(b), 10, 64)
				reads.Add(1)
				if got < floor {
					stale.Add(1)
					t.Errorf("stale read: got %d after %d was acknowledged", got, floor)
				}
			}
		}()
	}
	testcluster.WaitFor(t, 20*time.Second, func() error {
		if acked.Load() < 50 {
			return context.DeadlineExceeded
		}
		return nil
	})
	leader := c.WaitLeader("lin")
	c.Kill(c.Index(leader))
	before := acked.Load()
	testcluster.WaitFor(t, 30*time.Second, func() error {
		if acked.Load() < before+50 {
			return context.DeadlineExceeded
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if reads.Load() < 100 {
		t.Fatalf("only %d reads completed", reads.Load())
	}
	t.Logf("%d reads, %d writes, %d stale", reads.Load(), acked.Load(), stale.Load())
}
