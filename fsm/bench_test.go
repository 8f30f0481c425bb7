package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyPuts applies 256-byte puts over 10,000 keys in batches of
// 4, as a channel under write load does: one indexed-batch read (the old
// entry, for the create index and the counters) and one write per put.
//
//	go test -run '^$' -bench ApplyPuts -benchtime 200000x ./fsm/
func BenchmarkApplyPuts(b *testing.B) {
	_, c := newChannel1(b)
	value := make([]byte, 256)
	rng := rand.New(rand.NewPCG(1, 2))
	const batch = 4
	logs := make([]*raft.Log, batch)
	b.ReportAllocs()
	b.ResetTimer()
	index := uint64(0)
	for i := 0; i < b.N; i += batch {
		for j := range logs {
			index++
			logs[j] = cmdLog(b, index, &Put{Key: fmt.Appendf(nil, "key-%05d", rng.IntN(10000)), Value: value})
		}
		c.ApplyBatch(logs)
	}
}
