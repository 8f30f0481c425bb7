package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// A channel exists everywhere once its creation is acknowledged: right after
// the create answered, writes and reads through every other node succeed,
// also through a node whose copy of the meta state trails the meta group
// (each entry reaches its meta state machine 500 ms late). The clients
// keep going for a second after each create, so they meet that node before
// it has heard that the create committed, and while it applies it. Such a node asks
// the meta leader for its commit index and waits until its own copy has
// applied that far, instead of answering 503 not_ready or 404.
func TestChannelKnownEverywhereOnceCreated(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2})
	slow := c.Index("res2")
	meta := c.Nodes[slow].Agent().Node.Meta()
	meta.SetApplyHook(func(uint64) { time.Sleep(500 * time.Millisecond) })
	t.Cleanup(func() { meta.SetApplyHook(nil) })
	ctx := ctxT(t)
	for i := range 3 {
		name := fmt.Sprintf("fresh-%d", i)
		if _, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: 3}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		created := time.Now()
		rounds := 0
		for round := 0; round < 100 && (round < 2 || time.Since(created) < time.Second); round++ {
			rounds++
			for j := 1; j < len(c.Nodes); j++ {
				val := fmt.Sprintf("%d-%d", round, j)
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.Client(j).Put(rctx, name, "k", []byte(val), api.PutOptions{})
				cancel()
				if err != nil {
					t.Fatalf("write %d through %s, %v after %s was created: %v",
						round, c.Nodes[j].Name, time.Since(created).Round(time.Millisecond), name, err)
				}
				got, err := getString(c, j, name, "k", api.Linearizable, 10*time.Second)
				if err != nil || got != val {
					t.Fatalf("read %d through %s, %v after %s was created: %q, %v (want %q)",
						round, c.Nodes[j].Name, time.Since(created).Round(time.Millisecond), name, got, err, val)
				}
			}
		}
		t.Logf("%s: %d writes and reads through the other nodes in %v", name, rounds*(len(c.Nodes)-1), time.Since(created).Round(time.Millisecond))
	}
}

// A node restarts: until the meta leader's first append tells it the commit
// index, its copy of the meta state holds only its last meta snapshot (none
// here), so it does not know channels created since. A write and a read
// through it right after it started, for a channel it does not host, must
// succeed all the same: it asks the meta leader how far to catch up.
func TestChannelKnownThroughARestartedNode(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2})
	ctx := ctxT(t)
	if _, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "known", Nodes: []string{"core1", "core2", "res1"}}); err != nil {
		t.Fatal(err)
	}
	c.WaitLeader("known")
	putRetry(t, c, "known", "k", []byte("v0"))
	r := c.Index("res2") // hosts no replica of "known"
	for round := range 3 {
		c.Stop(r)
		c.Start(r)
		started := time.Now()
		val := fmt.Sprintf("v%d", round+1)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Client(r).Put(rctx, "known", "k", []byte(val), api.PutOptions{})
		cancel()
		if err != nil {
			t.Fatalf("restart %d: write through %s right after it started: %v", round, c.Nodes[r].Name, err)
		}
		if got, err := getString(c, r, "known", "k", api.Linearizable, 10*time.Second); err != nil || got != val {
			t.Fatalf("restart %d: read through %s right after it started: %q, %v", round, c.Nodes[r].Name, got, err)
		}
		t.Logf("restart %d: write and read through %s answered %v after its start", round, c.Nodes[r].Name, time.Since(started).Round(time.Millisecond))
	}
}
