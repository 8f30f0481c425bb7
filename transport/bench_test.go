//lint:file-ignore SA1019 raft still fills and reads its deprecated address fields (Leader, Candidate); the codec carries them so nothing is lost on the wire.

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
// tls=on is mutual TLS 1.3 (docs/benchmarks.md "Mutual TLS on the cluster
// port"); tls=off the cluster-key handshake alone.
func BenchmarkAppendEntries(b *testing.B) {
	for _, bc := range []struct {
		entries, size int
		tls           bool
	}{{64, 256, false}, {64, 256, true}, {64, 4096, false}, {64, 4096, true}, {4, 1 << 20, false}, {4, 1 << 20, true}} {
		b.Run(fmt.Sprintf("entries=%d/size=%d/tls=%s", bc.entries, bc.size, onOff(bc.tls)), func(b *testing.B) {
			a, f := benchPair(b, bc.tls)
			ga, _ := a.Group(1)
			gf, _ := f.Group(1)
			serve(b, gf, echoHandler)
			req := benchAppendRequest(bc.entries, bc.size)
			b.SetBytes(int64(bc.entries * bc.size))
			b.ReportAllocs()
			var resp raft.AppendEntriesResponse
			for b.Loop() {
				if err := ga.AppendEntries("n1", f.Addr(), req, &resp); err != nil { // f is n1 with TLS
					b.Fatal(err)
				}
			}
		})
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// benchPair starts two nodes, with mutual TLS or the cluster key.
func benchPair(b *testing.B, withTLS bool) (*testNode, *testNode) {
	if !withTLS {
		return newTestNode(b, "k"), newTestNode(b, "k")
	}
	ca := newTestCA(b)
	return newTLSNode(b, ca.certs(b, "n0")), newTLSNode(b, ca.certs(b, "n1"))
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

// BenchmarkRaftApply: committed writes of 3-replica groups over the
// transport (InmemStore, so the network path dominates), 64 concurrent
// writers spread over the groups. writes/op against rpcs/op shows how many
// RPCs, of all groups, one write to a connection carries. BenchmarkRaftApplyStock runs the same load
// over Raft's own transports for comparison.
func BenchmarkRaftApply(b *testing.B) {
	for _, bc := range []struct {
		groups int
		tls    bool
	}{{1, false}, {1, true}, {16, false}, {16, true}} {
		groups := bc.groups
		b.Run(fmt.Sprintf("groups=%d/tls=%s", groups, onOff(bc.tls)), func(b *testing.B) {
			gids := make([]uint64, groups)
			for i := range gids {
				gids[i] = uint64(i + 1)
			}
			c := newRaftClusterTLS(b, 3, gids, nil, bc.tls)
			c.waitLeaders(30 * time.Second)
			leaders := make([]*raft.Raft, groups)
			for i, gid := range gids {
				leaders[i] = c.leader(gid).raft
			}
			data := make([]byte, 256)
			var next atomic.Uint64
			counted := func(name string) (sum float64) {
				for _, n := range c.nodes {
					sum += n.metric(b, name)
				}
				return sum
			}
			sent0, writes0 := counted("shardnet_transport_rpcs_sent_total"), counted("shardnet_transport_conn_writes_total")
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
			// rpcs/op: Raft RPCs per write, every group's; writes/op: the
			// connection writes (syscalls) that carried them, both ways.
			b.ReportMetric((counted("shardnet_transport_rpcs_sent_total")-sent0)/float64(b.N), "rpcs/op")
			b.ReportMetric((counted("shardnet_transport_conn_writes_total")-writes0)/float64(b.N), "writes/op")
		})
	}
}

// BenchmarkRaftApplyStock is BenchmarkRaftApply over raft.InmemTransport (no
// network at all) and over a stock TCP NetworkTransport per replica (the
// design this package replaces).
func BenchmarkRaftApplyStock(b *testing.B) {
	for _, kind := range []string{"inmem", "tcp"} {
		for _, groups := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/groups=%d", kind, groups), func(b *testing.B) {
				var all []*raft.Raft
				b.Cleanup(func() {
					for _, r := range all {
						_ = r.Shutdown().Error()
					}
				})
				for range groups {
					var trans []raft.Transport
					var cfg raft.Configuration
					for i := range 3 {
						var tr raft.Transport
						if kind == "inmem" {
							_, tr = raft.NewInmemTransport("")
						} else {
							t, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 3, 10*time.Second, testLogger("tcp"))
							if err != nil {
								b.Fatal(err)
							}
							tr = t
						}
						trans = append(trans, tr)
						cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: tr.LocalAddr()})
					}
					if kind == "inmem" {
						for _, x := range trans {
							for _, y := range trans {
								x.(*raft.InmemTransport).Connect(y.LocalAddr(), y)
							}
						}
					}
					for i := range 3 {
						r, err := raft.NewRaft(testRaftConfig(raft.ServerID(fmt.Sprint(i))), &listFSM{},
							raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), trans[i])
						if err != nil {
							b.Fatal(err)
						}
						if err := r.BootstrapCluster(cfg).Error(); err != nil {
							b.Fatal(err)
						}
						all = append(all, r)
					}
				}
				var leaders []*raft.Raft
				waitFor(b, 30*time.Second, "every group to elect a leader", func() bool {
					leaders = leaders[:0]
					for _, r := range all {
						if r.State() == raft.Leader {
							leaders = append(leaders, r)
						}
					}
					return len(leaders) == groups
				})
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
			})
		}
	}
}
