package logstore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogsParallel measures group commit: each goroutine appends
// one 256-byte entry per StoreLogs to its own group, as concurrent Raft
// groups do. Raise -cpu (e.g. -cpu 1,16,64,256) to add writers; the
// appends-per-fsync gain shows as ns/op falling with more goroutines.
// docs/raft-notes.md "R10" measured this workload against raft-boltdb.
func BenchmarkStoreLogsParallel(b *testing.B) {
	db, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	data := make([]byte, 256)
	var nextGID atomic.Uint64
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := db.Group(nextGID.Add(1))
		l := &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
		logs := []*raft.Log{l}
		for pb.Next() {
			l.Index++
			if err := s.StoreLogs(logs); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkStoreLogsGroups is cross-group batching in the store: groups
// goroutines, each appending one 256-byte entry per StoreLogs to its own
// group in a closed loop, as the followers of that many busy Raft groups on
// one node do. It reports how many appends one WAL fsync made durable
// (appends/sync) and the syncs per append; ns/op is per append.
//
//	go test -run '^$' -bench BenchmarkStoreLogsGroups -benchtime 2s ./shard/logstore/
func BenchmarkStoreLogsGroups(b *testing.B) {
	for _, groups := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			data := make([]byte, 256)
			var next, done atomic.Int64
			var wg sync.WaitGroup
			syncs0 := db.pace.syncs.Load()
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for g := range groups {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := db.Group(uint64(g + 1))
					l := &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
					logs := []*raft.Log{l}
					for next.Add(1) <= int64(b.N) {
						l.Index++
						if err := s.StoreLogs(logs); err != nil {
							b.Error(err)
							return
						}
						done.Add(1)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			syncs := float64(db.pace.syncs.Load() - syncs0)
			if syncs > 0 {
				b.ReportMetric(float64(done.Load())/syncs, "appends/sync")
				b.ReportMetric(syncs/float64(done.Load()), "syncs/op")
			}
		})
	}
}
