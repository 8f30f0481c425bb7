package logstore

import (
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
