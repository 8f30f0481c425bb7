package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestNodeRegistry: the registry as GET /v1/nodes shows it. Every node
// reports its capacity and usage; core nodes started without -serve-data
// host nothing; a stopped node is suspect at once and dead only after
// -dead-after of absence, alive again as soon as it is back.
func TestNodeRegistry(t *testing.T) {
	const deadAfter = 6 * time.Second
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 2, CoreWithoutData: true, DeadAfter: deadAfter, StatsEvery: time.Second})
	ctx := ctxT(t)
	cl := c.Client(0)
	node := func(id string) (api.Node, error) {
		nodes, err := cl.Nodes(ctx)
		if err != nil {
			return api.Node{}, err
		}
		for _, n := range nodes {
			if n.ID == id {
				return n, nil
			}
		}
		return api.Node{}, fmt.Errorf("%s is not in the registry", id)
	}

	// Capacity and usage, once the cluster version lets the leader write
	// them (every node runs this binary: at once).
	c.WaitFor(30*time.Second, func() error {
		nodes, err := cl.Nodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			switch {
			case n.Capacity.DiskBytes == 0 || n.Capacity.DiskFreeBytes == 0 || n.Usage.DiskBytes == 0:
				return fmt.Errorf("%s reports no disk figures yet: %+v %+v", n.ID, n.Capacity, n.Usage)
			case n.Capacity.DiskFreeBytes > n.Capacity.DiskBytes || n.Usage.DiskBytes > n.Capacity.DiskBytes:
				return fmt.Errorf("%s: implausible disk figures %+v %+v", n.ID, n.Capacity, n.Usage)
			case n.ServeData != (n.Role == fsm.RoleResource):
				return fmt.Errorf("%s (%s) serve_data %v", n.ID, n.Role, n.ServeData)
			case n.Capacity.MaxReplicas != 2000:
				return fmt.Errorf("%s: max replicas %d", n.ID, n.Capacity.MaxReplicas)
			}
		}
		return nil
	})

	// Core nodes without -serve-data host nothing; the refusal says why.
	ch := c.CreateChannel("two", 2)
	for _, p := range ch.Placement {
		if !strings.HasPrefix(p.NodeID, "res") {
			t.Fatalf("channel placed on %s, a core node without -serve-data: %+v", p.NodeID, ch.Placement)
		}
	}
	_, err := cl.CreateChannel(ctx, api.CreateChannelRequest{Name: "three", Replicas: 3})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != "not_enough_nodes" || !strings.Contains(ae.Message, "3 core nodes without -serve-data") {
		t.Fatalf("3 replicas on 2 data nodes: %v", err)
	}
	c.WaitFor(10*time.Second, func() error {
		n, err := node("res1")
		if err == nil && n.Usage.Replicas != 1 {
			err = fmt.Errorf("res1 hosts %d replicas, want 1", n.Usage.Replicas)
		}
		return err
	})

	// Stopped: suspect at once, never dead before -dead-after; back: alive.
	res2 := c.Index("res2")
	stopped := time.Now()
	c.Kill(res2)
	c.WaitFor(15*time.Second, func() error {
		n, err := node("res2")
		switch {
		case err != nil:
			return err
		case n.State == fsm.NodeDead && time.Since(stopped) < deadAfter:
			t.Fatalf("res2 dead %v after it stopped, before -dead-after (%v)", time.Since(stopped), deadAfter)
		case n.State != fsm.NodeSuspect:
			return fmt.Errorf("res2 is %s", n.State)
		}
		return nil
	})
	c.Start(res2)
	c.WaitFor(20*time.Second, func() error {
		n, err := node("res2")
		switch {
		case err != nil:
			return err
		case n.State == fsm.NodeDead:
			t.Fatalf("res2 went dead though it came back (%v after it stopped)", time.Since(stopped))
		case n.State != fsm.NodeAlive:
			return fmt.Errorf("res2 is %s", n.State)
		}
		return nil
	})

	// Stopped for good: dead, but only after -dead-after.
	stopped = time.Now()
	c.Kill(res2)
	c.WaitFor(40*time.Second, func() error {
		n, err := node("res2")
		if err != nil {
			return err
		}
		if n.State != fsm.NodeDead {
			return fmt.Errorf("res2 is %s %v after it stopped", n.State, time.Since(stopped))
		}
		return nil
	})
	if d := time.Since(stopped); d < deadAfter {
		t.Fatalf("res2 dead %v after it stopped, before -dead-after (%v)", d, deadAfter)
	}
	c.Start(res2)
	c.WaitFor(20*time.Second, func() error {
		n, err := node("res2")
		if err == nil && n.State != fsm.NodeAlive {
			err = fmt.Errorf("res2 is %s after its restart", n.State)
		}
		return err
	})
}
