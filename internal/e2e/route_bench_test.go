package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// Requests through a node that hosts no replica of the channel: each one
// crosses to another node once (cluster/route.go), the cost this measures
// (docs/benchmarks.md "Requests through a node without a replica"):
//
//	go test -run '^$' -bench 'NonHosting' -benchtime 3s -count 3 ./internal/e2e/
func benchNonHosting(b *testing.B) *api.Client {
	b.Helper()
	c := testcluster.New(b, testcluster.Options{Core: 3, Resource: 1})
	ctx := context.Background()
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "bench", Replicas: 3,
			Nodes: []string{c.Nodes[0].Name, c.Nodes[1].Name, c.Nodes[2].Name}})
		if api.IsConflict(err) {
			return nil
		}
		return err
	})
	c.WaitLeader("bench")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	cl := api.NewClient(c.Nodes[3].URL(), "", hc)
	for i := range 200 {
		if _, err := cl.Put(ctx, "bench", fmt.Sprintf("key-%05d", i), value256, api.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	return cl
}

func BenchmarkNonHostingPut16(b *testing.B) {
	cl := benchNonHosting(b)
	runParallel(b, 16, func(i int) error {
		_, err := cl.Put(context.Background(), "bench", randKey(), value256, api.PutOptions{})
		return err
	})
}

func BenchmarkNonHostingGetLinearizable16(b *testing.B) {
	cl := benchNonHosting(b)
	runParallel(b, 16, func(i int) error {
		_, _, err := cl.Get(context.Background(), "bench", fmt.Sprintf("key-%05d", i%200), api.GetOptions{Consistency: api.Linearizable})
		return err
	})
}

func runParallel(b *testing.B, clients int, op func(i int) error) {
	b.SetParallelism((clients + 1) / 2) // GOMAXPROCS is 2 here
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := op(i); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
