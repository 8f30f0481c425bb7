package transport

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func BenchmarkZZBaseline(b *testing.B) {
	for _, kind := range []string{"inmem", "tcp"} {
		for _, groups := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/groups=%d", kind, groups), func(b *testing.B) {
				var leaders []*raft.Raft
				var all []*raft.Raft
				for g := 0; g < groups; g++ {
					var trans []raft.Transport
					var cfg raft.Configuration
					for i := 0; i < 3; i++ {
						var tr raft.Transport
						var addr raft.ServerAddress
						if kind == "inmem" {
							addr, tr = raft.NewInmemTransport("")
						} else {
							t, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 3, 10*time.Second, testLogger("x"))
							if err != nil {
								b.Fatal(err)
							}
							tr, addr = t, t.LocalAddr()
						}
						trans = append(trans, tr)
						cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: addr})
					}
					if kind == "inmem" {
						for _, x := range trans {
							for _, y := range trans {
								x.(*raft.InmemTransport).Connect(y.LocalAddr(), y)
							}
						}
					}
					for i := 0; i < 3; i++ {
						c := testRaftConfig(raft.ServerID(fmt.Sprint(i)))
						r, err := raft.NewRaft(c, &listFSM{}, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), trans[i])
						if err != nil {
							b.Fatal(err)
						}
						r.BootstrapCluster(cfg)
						all = append(all, r)
					}
				}
				defer func() {
					for _, r := range all {
						r.Shutdown().Error()
					}
				}()
				waitFor(b, 30*time.Second, "leaders", func() bool {
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
