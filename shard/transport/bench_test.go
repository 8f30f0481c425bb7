package transport

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func benchAppendRequest(entries, size int) *raft.AppendEntriesRequest {
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n0"), Addr: []byte("127.0.0.1:7001")},
		Term:      3, Leader: []byte("127.0.0.1:7001"), PrevLogEntry: 1000, PrevLogTerm: 3, LeaderCommitIndex: 999,
	}
	now := time.Now()
	for i := range entries {
		req.Entries = append(req.Entries, &raft.Log{Index: uint64(1001 + i), Term: 3, Data: make([]byte, size), AppendedAt: now})
	}
	return req
}

// BenchmarkAppendEntries measures one AppendEntries round trip between two
// nodes over loopback (a follower that answers at once).
func BenchmarkAppendEntries(b *testing.B) {
	for _, bc := range []struct{ entries, size int }{{64, 256}, {64, 4096}, {4, 1 << 20}} {
		b.Run(fmt.Sprintf("entries=%d/size=%d", bc.entries, bc.size), func(b *testing.B) {
			a, f := newTestNode(b, "k"), newTestNode(b, "k")
			ga, _ := a.Group(1)
			gf, _ := f.Group(1)
			serve(b, gf, echoHandler)
			req := benchAppendRequest(bc.entries, bc.size)
			b.SetBytes(int64(bc.entries * bc.size))
			b.ReportAllocs()
			var resp raft.AppendEntriesResponse
			for b.Loop() {
				if err := ga.AppendEntries("f", f.Addr(), req, &resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHeartbeat: the fast path's round trip, many groups in parallel.
func BenchmarkHeartbeat(b *testing.B) {
	a, f := newTestNode(b, "k"), newTestNode(b, "k")
	const groups = 64
	var gs []*GroupTransport
	for i := range groups {
		ga, _ := a.Group(uint64(i))
		gf, _ := f.Group(uint64(i))
		gf.SetHeartbeatHandler(echoHandler)
		gs = append(gs, ga)
	}
	var next atomic.Uint64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		g := gs[next.Add(1)%groups]
		req := heartbeatReq(1)
		var resp raft.AppendEntriesResponse
		for pb.Next() {
			if err := g.AppendEntries("f", f.Addr(), req, &resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRaftApply: committed writes per second of 3-replica groups over
// the transport (InmemStore, so the network path dominates), with 64
// concurrent writers spread over the groups.
func BenchmarkRaftApply(b *testing.B) {
	for _, groups := range []int{1, 16} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			gids := make([]uint64, groups)
			for i := range gids {
				gids[i] = uint64(i + 1)
			}
			c := newRaftCluster(b, 3, gids, nil)
			c.waitLeaders(30 * time.Second)
			leaders := make([]*raft.Raft, groups)
			for i, gid := range gids {
				leaders[i] = c.leader(gid).raft
			}
			data := make([]byte, 256)
			var next atomic.Uint64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := leaders[next.Add(1)%uint64(groups)]
				for pb.Next() {
					if err := r.Apply(data, 10*time.Second).Error(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			var sent float64
			for _, n := range c.nodes {
				sent += n.metric(b, "shardnet_transport_rpcs_sent_total")
			}
			b.ReportMetric(sent/float64(b.N), "rpcs/op")
		})
	}
}
