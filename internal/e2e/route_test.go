package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// routeCluster is three core nodes hosting channel "route" and a resource
// node (index 3) hosting nothing: every request through it crosses to
// another node with one call (cluster/route.go).
func routeCluster(t *testing.T, opts testcluster.Options) (*testcluster.Cluster, int) {
	t.Helper()
	opts.Core, opts.Resource = 3, 1
	c := testcluster.New(t, opts)
	ctx := ctxT(t)
	c.WaitFor(20*time.Second, func() error {
		_, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "route",
			Nodes: []string{c.Nodes[0].Name, c.Nodes[1].Name, c.Nodes[2].Name}})
		if api.IsConflict(err) {
			return nil
		}
		return err
	})
	return c, c.Index(c.WaitLeader("route"))
}

// sumMetric adds a series over nodes.
func sumMetric(t *testing.T, c *testcluster.Cluster, series string, nodes ...int) float64 {
	sum := 0.0
	for _, i := range nodes {
		sum += metric(t, c, i, series)
	}
	return sum
}

// A blocking read through a node without a replica waits on a node with
// one, in one call held for the wait, and answers the change as soon as it
// is applied there.
func TestWatchThroughANodeWithoutAReplica(t *testing.T) {
	c, _ := routeCluster(t, testcluster.Options{})
	const outside = 3
	ctx := ctxT(t)
	idx, err := c.Client(0).Put(ctx, "route", "w", []byte("v1"), api.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		v   []byte
		idx uint64
		err error
		at  time.Time
	}
	done := make(chan answer, 1)
	go func() {
		v, i, err := c.Client(outside).Get(ctx, "route", "w", api.GetOptions{WaitIndex: idx, Wait: 20 * time.Second})
		done <- answer{v, i, err, time.Now()}
	}()
	// The watch waits on a node with a replica (it counts the call as it
	// starts serving it).
	c.WaitFor(10*time.Second, func() error {
		if sumMetric(t, c, `shardnet_cluster_calls_served_total{call="watch"}`, 0, 1, 2) < 1 {
			return errors.New("no node with a replica serves the watch yet")
		}
		return nil
	})
	select {
	case a := <-done:
		t.Fatalf("the watch answered before the change: %q %d %v", a.v, a.idx, a.err)
	default:
	}
	put := time.Now()
	idx2, err := c.Client(1).Put(ctx, "route", "w", []byte("v2"), api.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-done:
		if a.err != nil || string(a.v) != "v2" || a.idx != idx2 {
			t.Fatalf("the watch answered %q at %d, %v; want v2 at %d", a.v, a.idx, a.err, idx2)
		}
		if d := a.at.Sub(put); d > 5*time.Second {
			t.Fatalf("the watch answered %v after the change", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the watch did not answer the change")
	}
	// Its own wait running out answers the current value, not an error.
	v, _, err := c.Client(outside).Get(ctx, "route", "w", api.GetOptions{WaitIndex: idx2, Wait: 300 * time.Millisecond})
	if err != nil || string(v) != "v2" {
		t.Fatalf("a watch that timed out: %q, %v; want the current value", v, err)
	}
}

// A write through a node without a replica that was sent to the leader but
// got no answer (the leader's node froze) is outcome_unknown, and is never
// sent again, to that node or to the leader elected meanwhile.
func TestWriteSentOnceEvenWithoutAnAnswer(t *testing.T) {
	c, leader := routeCluster(t, testcluster.Options{Faults: true, ChannelRaft: testcluster.FastRaft()})
	const outside = 3
	ctx := ctxT(t)
	// The outside node learns the leader.
	if _, err := c.Client(outside).Put(ctx, "route", "warm", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sent := func() float64 {
		total := 0.0
		for _, o := range []string{"ok", "refused", "unreachable", "no_answer", "previous_version"} {
			total += metric(t, c, outside, fmt.Sprintf(`shardnet_cluster_calls_total{call="propose",outcome=%q}`, o))
		}
		return total
	}
	before := sent()
	c.Freeze(leader)
	defer c.Thaw(leader)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := c.Client(outside).Put(wctx, "route", "once", []byte("v"), api.PutOptions{})
	if !api.IsOutcomeUnknown(err) {
		t.Fatalf("a write whose leader froze after receiving it: %v, want outcome_unknown", err)
	}
	if got := sent() - before; got != 1 {
		t.Fatalf("the write was sent %v times, want once", got)
	}
	if got := metric(t, c, outside, `shardnet_cluster_calls_total{call="propose",outcome="no_answer"}`); got != 1 {
		t.Fatalf("propose calls without an answer: %v, want 1", got)
	}
}

// Reads and listings through a node without a replica come back as the
// hosting node answers them (values, indexes, the empty value, paging).
func TestReadsThroughANodeWithoutAReplica(t *testing.T) {
	c, _ := routeCluster(t, testcluster.Options{})
	const outside = 3
	ctx := ctxT(t)
	oc := c.Client(outside)
	for i := range 5 {
		if _, err := oc.Put(ctx, "route", fmt.Sprintf("p/%d", i), fmt.Appendf(nil, "v%d", i), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	empty, err := oc.Put(ctx, "route", "p/empty", nil, api.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []api.Consistency{api.Linearizable, api.Stale} {
		v, idx, err := oc.Get(ctx, "route", "p/empty", api.GetOptions{Consistency: level})
		if level == api.Stale && err != nil {
			continue // a follower may not have applied it yet
		}
		if err != nil || len(v) != 0 || idx != empty {
			t.Fatalf("%s get of the empty value: %q at %d, %v; want it at %d", level, v, idx, err, empty)
		}
	}
	if _, _, err := oc.Get(ctx, "route", "missing", api.GetOptions{}); !api.IsNotFound(err) {
		t.Fatalf("get of a missing key: %v, want key_not_found", err)
	}
	page, err := oc.List(ctx, "route", "p/", "", 4, api.Linearizable)
	if err != nil || len(page.Items) != 4 || page.Next != "p/3" || string(page.Items[0].Value) != "v0" {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	page, err = oc.List(ctx, "route", "p/", page.Next, 0, api.Linearizable)
	if err != nil || len(page.Items) != 2 || page.Items[1].Key != "p/empty" || page.Items[1].Value != nil || page.Next != "" {
		t.Fatalf("second page: %+v, %v", page, err)
	}
	if got := sumMetric(t, c, `shardnet_cluster_calls_served_total{call="list"}`, 0, 1, 2); got != 2 {
		t.Fatalf("list calls served: %v, want 2", got)
	}
}
