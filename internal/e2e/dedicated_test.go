package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// A dedicated channel owns its nodes: later channels, scaling of others and
// a second dedicated channel never land on them, and deleting it frees them
// (docs/api.md "POST /v1/channels").
func TestDedicatedChannelOwnsItsNodes(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 3})
	ctx := ctxT(t)
	cl := c.Client(0)

	ded, err := cl.CreateChannel(ctx, api.CreateChannelRequest{Name: "nft", Replicas: 3, Dedicated: true})
	if err != nil {
		t.Fatal(err)
	}
	owned := map[string]bool{}
	for _, r := range ded.Placement {
		owned[r.NodeID] = true
	}
	if len(owned) != 3 {
		t.Fatalf("dedicated placement = %+v", ded.Placement)
	}
	c.WaitLeader("nft")

	// Every later channel lands on the other three nodes.
	for i := range 4 {
		name := fmt.Sprintf("other-%d", i)
		ch, err := c.Client(i%6).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: 3})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		for _, r := range ch.Placement {
			if owned[r.NodeID] {
				t.Fatalf("channel %s placed on %s, a node of the dedicated channel", name, r.NodeID)
			}
		}
	}
	// Scaling another channel past the free nodes, and a second dedicated
	// channel, are refused with the numbers; nothing changes.
	five := 5
	_, err = cl.ChangeChannel(ctx, "other-0", api.ChangeChannelRequest{Replicas: &five})
	if e := api.AsError(err); e == nil || e.Status != 409 || e.Code != api.CodeNotEnoughNodes {
		t.Fatalf("scaling onto dedicated nodes: %v", err)
	}
	if ch, err := cl.Channel(ctx, "other-0"); err != nil || ch.Replicas != 3 || len(ch.Placement) != 3 {
		t.Fatalf("refused scale changed the channel: %+v, %v", ch, err)
	}
	_, err = cl.CreateChannel(ctx, api.CreateChannelRequest{Name: "nft2", Replicas: 3, Dedicated: true})
	e := api.AsError(err)
	if e == nil || e.Status != 409 || e.Code != api.CodeNotEnoughNodes || !strings.ContainsAny(e.Message, "0123456789") {
		t.Fatalf("second dedicated channel on a full cluster: %v", err)
	}
	if _, err := cl.Channel(ctx, "nft2"); api.AsError(err) == nil || api.AsError(err).Status != 404 {
		t.Fatalf("a refused create left a channel: %v", err)
	}

	// Deleting the dedicated channel frees its nodes: once every node has
	// dropped its replica, a new dedicated channel takes three nodes that
	// host nothing, and the freed nodes serve it.
	if err := cl.DeleteChannel(ctx, "nft"); err != nil {
		t.Fatal(err)
	}
	var ded2 api.Channel
	c.WaitFor(30*time.Second, func() error {
		var err error
		ded2, err = cl.CreateChannel(ctx, api.CreateChannelRequest{Name: "nft2", Replicas: 3, Dedicated: true})
		return err
	})
	for _, r := range ded2.Placement {
		if !owned[r.NodeID] {
			t.Fatalf("new dedicated channel placed on %s, which hosts other channels", r.NodeID)
		}
	}
	c.WaitLeader("nft2")
	if _, err := c.Client(5).Put(ctx, "nft2", "k", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}
