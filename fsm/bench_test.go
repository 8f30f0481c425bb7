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
func BenchmarkApplyPuts(b *testing.B) { benchApplyPuts(b, 10000) }

// BenchmarkApplyPutsNewKeys draws keys from 10 million: nearly every put
// creates its key, so its read finds nothing in any memtable or table.
func BenchmarkApplyPutsNewKeys(b *testing.B) { benchApplyPuts(b, 10_000_000) }

// BenchmarkApplyKeyedPuts is BenchmarkApplyPuts with every put under an
// idempotency key of its own (what the Go client sends), kept 1,000
// entries: the cost of the record, its lookup and, once the window is
// full, the pruning of an expired record per write.
//
//	go test -run '^$' -bench 'ApplyPuts$|ApplyKeyedPuts' ./fsm/
func BenchmarkApplyKeyedPuts(b *testing.B) {
	_, c := newChannel1(b)
	value := make([]byte, 256)
	rng := rand.New(rand.NewPCG(1, 2))
	const batch = 4
	logs := make([]*raft.Log, batch)
	scope := make([]byte, 16)
	b.ReportAllocs()
	b.ResetTimer()
	index := uint64(0)
	for i := 0; i < b.N; i += batch {
		for j := range logs {
			index++
			p := &Put{Key: fmt.Appendf(nil, "key-%08d", rng.IntN(10000)), Value: value}
			k := &Idempotent{Scope: scope, Key: fmt.Appendf(nil, "%022d", index), Window: 1000, Cmd: p}
			k.Hash[0] = byte(index)
			logs[j] = cmdLog(b, index, k)
		}
		c.ApplyBatch(logs)
	}
}

func benchApplyPuts(b *testing.B, keys int) {
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
			logs[j] = cmdLog(b, index, &Put{Key: fmt.Appendf(nil, "key-%08d", rng.IntN(keys)), Value: value})
		}
		c.ApplyBatch(logs)
	}
}

// BenchmarkKeyIndexBuild is the scan a channel makes on its first apply
// after it opens: the time per key of building its key index.
//
//	go test -run '^$' -bench KeyIndexBuild ./fsm/
func BenchmarkKeyIndexBuild(b *testing.B) {
	s, c := newChannel1(b)
	value := make([]byte, 256)
	const keys, batch = 200_000, 1000
	logs := make([]*raft.Log, batch)
	for i := 0; i < keys; i += batch {
		for j := range logs {
			logs[j] = cmdLog(b, uint64(i+j+1), &Put{Key: fmt.Appendf(nil, "key-%08d", i+j), Value: value})
		}
		c.ApplyBatch(logs)
	}
	c.Close()
	b.ResetTimer()
	for range b.N {
		c = openChannel(b, s, 1)
		c.applyMu.Lock()
		c.ensureIndex()
		n := len(c.index.m)
		c.applyMu.Unlock()
		if n != keys {
			b.Fatalf("index of %d keys, want %d", n, keys)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
}

// BenchmarkHashState is what a hash check costs each replica (off its
// apply path): a full hash of a channel of 100,000 keys of 256-byte
// values, reported per key and in bytes of state per second.
//
//	go test -run '^$' -bench HashState ./fsm/
func BenchmarkHashState(b *testing.B) {
	s, c := newChannel1(b)
	const keys, batch = 100_000, 256
	value := make([]byte, 256)
	logs := make([]*raft.Log, 0, batch)
	for i := range keys {
		logs = append(logs, cmdLog(b, uint64(i+1), &Put{Key: fmt.Appendf(nil, "key-%08d", i), Value: value}))
		if len(logs) == batch || i == keys-1 {
			c.ApplyBatch(logs)
			logs = logs[:0]
		}
	}
	b.SetBytes(int64(c.Stats().Bytes))
	b.ResetTimer()
	for range b.N {
		if _, n, err := hashState(s.db, 1, c.gen, nil); err != nil || n != keys {
			b.Fatalf("hashed %d keys: %v", n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
}
