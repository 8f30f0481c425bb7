package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// chunksOnPlacement checks that every live node of channel's placement
// holds every chunk of ids, and that the placement has want replicas,
// none on gone.
func chunksOnPlacement(c *testcluster.Cluster, channel string, want int, gone string, ids []chunk.ID) error {
	ch, err := c.Client(0).Channel(context.Background(), channel)
	if err != nil {
		return err
	}
	if len(ch.Placement) != want {
		return fmt.Errorf("%s has %d replicas placed, want %d", channel, len(ch.Placement), want)
	}
	var missing []string
	for _, r := range ch.Placement {
		if r.NodeID == gone {
			return fmt.Errorf("%s is still placed on %s", channel, gone)
		}
		store := c.Nodes[c.Index(r.NodeID)].Agent().Node.Chunks()
		for _, id := range ids {
			if !store.Has(id) {
				missing = append(missing, r.NodeID+":"+id.String()[:8])
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: chunks missing: %s", channel, strings.Join(missing, " "))
	}
	return nil
}

// TestFilesReachAddedReplicas: a channel with files scaled 3 → 5, and a
// channel whose replica on a dead node is replaced by repair, end with
// every chunk on every replica, without any read and long before the
// periodic anti-entropy round (10 minutes): the added replicas fetch them
// as soon as they have the manifests.
func TestFilesReachAddedReplicas(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 3, DeadAfter: 3 * time.Second})
	c.CreateChannel("grow", 3)
	fix := c.CreateChannel("fix", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := randomBytes(31, 9*mib)
	f := randomBytes(32, 9*mib)
	for ch, data := range map[string][]byte{"grow": g, "fix": f} {
		if _, err := c.Client(0).PutFile(ctx, ch, "x.bin", bytes.NewReader(data), int64(len(data)), api.PutFileOptions{}); err != nil {
			t.Fatalf("put %s: %v", ch, err)
		}
	}

	five := 5
	if _, err := c.Client(0).ChangeChannel(ctx, "grow", api.ChangeChannelRequest{Replicas: &five}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(30*time.Second, func() error { return chunksOnPlacement(c, "grow", 5, "", chunkIDs(g)) })

	victim := ""
	for _, r := range fix.Placement {
		if r.NodeID != c.Nodes[0].Name { // the test's client
			victim = r.NodeID
		}
	}
	c.Kill(c.Index(victim))
	c.WaitFor(40*time.Second, func() error { return chunksOnPlacement(c, "fix", 3, victim, chunkIDs(f)) })
}
