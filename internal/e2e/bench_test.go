package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// The KV benchmarks run against a real 3-node cluster on loopback (in this
// process, over real TCP and fsync'd disks), through the HTTP API:
//
//	go test -run '^$' -bench . -benchtime 5s ./internal/e2e/
//
// Requests go to a follower node, so writes and linearizable reads include
// one forwarding hop, as a client that does not track leaders would see.
//
// The cluster port speaks mutual TLS, as by default; SHARDNET_BENCH_TLS=off
// runs it on the cluster key alone, to measure what TLS costs
// (docs/benchmarks.md "Mutual TLS on the cluster port").

const benchKeys = 10000

func benchCluster(b *testing.B) (*testcluster.Cluster, *api.Client) {
	b.Helper()
	return benchClusterTLS(b, os.Getenv("SHARDNET_BENCH_TLS") != "off")
}

func benchClusterTLS(b *testing.B, withTLS bool) (*testcluster.Cluster, *api.Client) {
	b.Helper()
	c := testcluster.New(b, testcluster.Options{Core: 3, Insecure: !withTLS})
	c.CreateChannel("bench", 3)
	leader := c.WaitLeader("bench")
	// A non-leader, so the numbers include forwarding.
	idx := (c.Index(leader) + 1) % 3
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	return c, api.NewClient(c.Nodes[idx].URL(), "", hc)
}

func randKey() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(benchKeys))
	return fmt.Sprintf("key-%05d", n.Int64())
}

var value256 = make([]byte, 256)

func BenchmarkPutSequential(b *testing.B) {
	_, cl := benchCluster(b)
	ctx := context.Background()
	b.SetBytes(256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.Put(ctx, "bench", randKey(), value256, api.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutConcurrent16(b *testing.B) { benchPutParallel(b, 16) }
func BenchmarkPutConcurrent64(b *testing.B) { benchPutParallel(b, 64) }

func benchPutParallel(b *testing.B, clients int) {
	_, cl := benchCluster(b)
	ctx := context.Background()
	b.SetBytes(256)
	b.SetParallelism((clients + 1) / 2) // GOMAXPROCS is 2 here
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.Put(ctx, "bench", randKey(), value256, api.PutOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGetLinearizableSequential(b *testing.B) {
	benchGet(b, 1, api.Linearizable)
}

func BenchmarkGetLinearizableConcurrent16(b *testing.B) {
	benchGet(b, 16, api.Linearizable)
}

func BenchmarkGetStaleConcurrent16(b *testing.B) {
	benchGet(b, 16, api.Stale)
}

func benchGet(b *testing.B, clients int, level api.Consistency) {
	_, cl := benchCluster(b)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, err := cl.Put(ctx, "bench", fmt.Sprintf("key-%05d", i), value256, api.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	// A stale read on a follower sees what it has applied: wait for it.
	testcluster.WaitFor(b, 10*time.Second, func() error {
		_, _, err := cl.Get(ctx, "bench", "key-00199", api.GetOptions{Consistency: api.Stale})
		return err
	})
	get := func(i int) {
		if _, _, err := cl.Get(ctx, "bench", fmt.Sprintf("key-%05d", i%200), api.GetOptions{Consistency: level}); err != nil {
			b.Error(err)
		}
	}
	b.ResetTimer()
	if clients == 1 {
		for i := 0; i < b.N; i++ {
			get(i)
		}
		return
	}
	b.SetParallelism((clients + 1) / 2)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			get(i)
			i++
		}
	})
}

// BenchmarkPut16Channels spreads concurrent writes over 16 channels, whose
// leaders spread over the three nodes.
func BenchmarkPut16Channels(b *testing.B) {
	c := testcluster.New(b, testcluster.Options{Core: 3})
	for i := range 16 {
		c.CreateChannel(fmt.Sprintf("bench-%d", i), 3)
	}
	// Elections are not what this measures: start when every group is led.
	for i := range 16 {
		c.WaitLeader(fmt.Sprintf("bench-%d", i))
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	cl := api.NewClient(c.Nodes[0].URL(), "", hc)
	ctx := context.Background()
	b.SetBytes(256)
	b.SetParallelism(32) // 64 clients on GOMAXPROCS=2
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n, _ := rand.Int(rand.Reader, big.NewInt(16))
			if _, err := cl.Put(ctx, fmt.Sprintf("bench-%d", n.Int64()), randKey(), value256, api.PutOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTLSCost measures what mutual TLS on the cluster port costs the
// KV path (docs/benchmarks.md "Mutual TLS on the cluster port"): two
// 3-node clusters in this process, one on TLS and one on the cluster key,
// driven in alternating one-second slices by 16 clients through a
// non-leader (writes and linearizable reads forwarded, as above), so that
// both see the same noise of a shared machine. It reports the median
// requests per second of each and the cost.
//
//	go test -run '^$' -bench BenchmarkTLSCost -benchtime 1x ./internal/e2e/
func BenchmarkTLSCost(b *testing.B) {
	const clients, slices, slice = 16, 8, time.Second
	_, on := benchClusterTLS(b, true)
	_, off := benchClusterTLS(b, false)
	ctx := context.Background()
	for _, cl := range []*api.Client{on, off} {
		for i := 0; i < 200; i++ {
			if _, err := cl.Put(ctx, "bench", fmt.Sprintf("key-%05d", i), value256, api.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	run := func(cl *api.Client, op func(*api.Client, int) error) float64 {
		var ops atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(slice)
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; time.Now().Before(deadline); i += clients {
					if err := op(cl, i); err != nil {
						b.Error(err)
						return
					}
					ops.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(ops.Load()) / slice.Seconds()
	}
	put := func(cl *api.Client, i int) error {
		_, err := cl.Put(ctx, "bench", randKey(), value256, api.PutOptions{})
		return err
	}
	get := func(cl *api.Client, i int) error {
		_, _, err := cl.Get(ctx, "bench", fmt.Sprintf("key-%05d", i%200), api.GetOptions{})
		return err
	}
	for range b.N {
		for _, w := range []struct {
			name string
			op   func(*api.Client, int) error
		}{{"put", put}, {"get", get}} {
			var withTLS, without []float64
			for i := range slices {
				// Alternate which goes first: a slice may take the warmth
				// (or the noise) the one before it left.
				if i%2 == 0 {
					withTLS = append(withTLS, run(on, w.op))
					without = append(without, run(off, w.op))
				} else {
					without = append(without, run(off, w.op))
					withTLS = append(withTLS, run(on, w.op))
				}
			}
			mOn, mOff := median(withTLS), median(without)
			b.ReportMetric(mOn, w.name+"_tls_req/s")
			b.ReportMetric(mOff, w.name+"_plain_req/s")
			b.ReportMetric(100*(1-mOn/mOff), w.name+"_cost_%")
			b.Logf("%s: TLS %.0f req/s, cluster key %.0f req/s (medians of %d slices; TLS %v, key %v)", w.name, mOn, mOff, slices, round(withTLS), round(without))
		}
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}
