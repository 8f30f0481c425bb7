package fsm

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// withHashChecks turns every every-th command entry of logs into a hash
// check, at the same index, and returns the check indexes.
func withHashChecks(t testing.TB, logs []*raft.Log, every int) []uint64 {
	t.Helper()
	var checks []uint64
	n := 0
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		if n++; n%every == 0 {
			logs[i] = cmdLog(t, l.Index, &HashCheck{})
			checks = append(checks, l.Index)
		}
	}
	return checks
}

func hashAt(t testing.TB, c *Channel, index uint64) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.HashAt(ctx, index)
	if err != nil {
		t.Fatalf("HashAt(%d): %v", index, err)
	}
	return h
}

// hashLog collects what a store's OnHash reports.
type hashLog struct {
	mu sync.Mutex
	m  map[uint64]uint64 // index -> hash (one channel per store)
}

func newHashLog(t testing.TB, opts StoreOptions) (*hashLog, *Channel) {
	hl := &hashLog{m: map[uint64]uint64{}}
	opts.OnHash = func(_, index, hash uint64) {
		hl.mu.Lock()
		defer hl.mu.Unlock()
		hl.m[index] = hash
	}
	return hl, openChannel(t, openStoreOpts(t, opts), 1)
}

// wait returns the hash reported for index, waiting for it a while.
func (hl *hashLog) wait(t testing.TB, index uint64) (uint64, bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hl.mu.Lock()
		h, ok := hl.m[index]
		hl.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return h, ok
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHashCheckMatchesFullHash: for random logs of puts, deletes and txns,
// the hash each check records equals a full hash of the state recomputed
// right after that entry on a replica that applies one entry at a time,
// whatever the batching, with or without a key index, and on a replica
// restored from a snapshot half way (which hashes only the checks after
// its snapshot).
func TestHashCheckMatchesFullHash(t *testing.T) {
	for _, seed := range []uint64{3, 17, 101} {
		logs := randomLog(t, seed, 900)
		checks := withHashChecks(t, logs, 29)

		// The reference: one entry at a time, a full hash after each check.
		sr, ref := newChannel1(t)
		full := map[uint64]uint64{}
		for _, l := range logs {
			ref.ApplyBatch([]*raft.Log{l})
			if l.Type == raft.LogCommand && l.Data[0] == typeHashCheck {
				h, _, err := hashState(sr.db, 1, ref.gen, nil)
				if err != nil {
					t.Fatal(err)
				}
				full[l.Index] = h
			}
		}

		batched, a := newHashLog(t, StoreOptions{})
		applyInBatches(t, a, logs, seed+1, 64)
		unindexed, noIndex := newHashLog(t, StoreOptions{KeyIndexBytes: -1})
		applyInBatches(t, noIndex, logs, seed+2, 7)

		half := len(logs) / 2
		_, src := newChannel1(t)
		applyInBatches(t, src, logs[:half], seed+3, 16)
		restoredLog, restored := newHashLog(t, StoreOptions{})
		if err := restored.Restore(readCloser(snapshotBytes(t, src))); err != nil {
			t.Fatal(err)
		}
		applyInBatches(t, restored, logs[half:], seed+4, 16)

		distinct := map[uint64]bool{}
		for _, i := range checks {
			want := full[i]
			distinct[want] = true
			for name, hl := range map[string]*hashLog{"batched": batched, "no key index": unindexed} {
				if got, ok := hl.wait(t, i); !ok || got != want {
					t.Fatalf("seed %d, check at %d: %s replica hashed %x (reported %v), full hash %x", seed, i, name, got, ok, want)
				}
			}
			if i > logs[half-1].Index {
				if got, ok := restoredLog.wait(t, i); !ok || got != want {
					t.Fatalf("seed %d, check at %d: restored replica hashed %x (reported %v), full hash %x", seed, i, got, ok, want)
				}
			}
		}
		if len(checks) < 20 || len(distinct) < len(checks)/2 {
			t.Fatalf("%d checks, %d distinct hashes: the test checks little", len(checks), len(distinct))
		}
		if last := checks[len(checks)-1]; hashAt(t, a, last) != full[last] {
			t.Fatal("HashAt differs from what OnHash reported")
		}
	}
}

// TestHashCheckKeepsFewRecords: a replica remembers the last keepHashes
// hashes; an older index, or one where no check was applied, is unknown.
func TestHashCheckKeepsFewRecords(t *testing.T) {
	_, c := newChannel1(t)
	index := uint64(0)
	for i := range keepHashes + 3 {
		index++
		applyOne(t, c, index, put("k", string(rune('a'+i))))
		index++
		applyOne(t, c, index, &HashCheck{})
		hashAt(t, c, index)
	}
	for _, i := range []uint64{2, 4, 6, index - 1} {
		if _, err := c.HashAt(context.Background(), i); !errors.Is(err, ErrHashUnknown) {
			t.Fatalf("HashAt(%d) = %v, want ErrHashUnknown", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.HashAt(ctx, index+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("HashAt of an index not applied yet = %v, want to wait until the deadline", err)
	}
}

// TestHashCheckSeesStoredCorruption: a value changed in pebble under the
// state machine, with no log entry, changes the next check's hash, and
// OnHash reports each hash.
func TestHashCheckSeesStoredCorruption(t *testing.T) {
	var mu sync.Mutex
	reported := map[uint64]uint64{}
	s := openStoreOpts(t, StoreOptions{OnHash: func(gid, index, hash uint64) {
		mu.Lock()
		defer mu.Unlock()
		reported[gid<<32|index] = hash
	}})
	a := openChannel(t, s, 1)
	b := openChannel(t, s, 2)
	logs := randomLog(t, 5, 200)
	applyInBatches(t, a, logs, 1, 8)
	applyInBatches(t, b, logs, 2, 8)
	next := logs[len(logs)-1].Index + 1
	applyOne(t, a, next, &HashCheck{})
	applyOne(t, b, next, &HashCheck{})
	if ha, hb := hashAt(t, a, next), hashAt(t, b, next); ha != hb {
		t.Fatalf("equal replicas hashed %x and %x", ha, hb)
	}

	entries, _, err := b.List(nil, nil, 1)
	if err != nil || len(entries) != 1 {
		t.Fatalf("List = %v, %v", entries, err)
	}
	key := entries[0].Key
	if err := b.OverwriteForTest(key, []byte("wrong")); err != nil {
		t.Fatal(err)
	}
	if e, _ := mustGet(t, b, string(key)); string(e.Value) != "wrong" || e.ModifyIndex != entries[0].ModifyIndex {
		t.Fatalf("after the overwrite b reads %+v", e)
	}
	next++
	applyOne(t, a, next, &HashCheck{})
	applyOne(t, b, next, &HashCheck{})
	ha, hb := hashAt(t, a, next), hashAt(t, b, next)
	if ha == hb {
		t.Fatalf("a corrupted replica hashed like a sound one: %x", ha)
	}
	mu.Lock()
	defer mu.Unlock()
	if reported[1<<32|next] != ha || reported[2<<32|next] != hb {
		t.Fatalf("OnHash reported %x and %x, HashAt says %x and %x", reported[1<<32|next], reported[2<<32|next], ha, hb)
	}
}

// TestHashCheckInsideABatch: a check in the middle of a batch hashes the
// state before the entries after it, and the rest of the batch applies.
func TestHashCheckInsideABatch(t *testing.T) {
	_, a := newChannel1(t)
	_, b := newChannel1(t)
	applyOne(t, a, 1, put("x", "1"))
	applyOne(t, a, 2, &HashCheck{})
	logs := []*raft.Log{cmdLog(t, 1, put("x", "1")), cmdLog(t, 2, &HashCheck{}), cmdLog(t, 3, put("x", "2")), cmdLog(t, 4, del("x"))}
	res := b.ApplyBatch(logs)
	if r, ok := res[1].(*Result); !ok || r.Index != 2 || r.Err != nil {
		t.Fatalf("hash check result %#v", res[1])
	}
	if hashAt(t, a, 2) != hashAt(t, b, 2) {
		t.Fatal("a check inside a batch hashed a later state")
	}
	if _, found := mustGet(t, b, "x"); found || b.Applied() != 4 {
		t.Fatalf("the batch after the check: found x %v, applied %d", found, b.Applied())
	}
}

// TestRebuildRefusesASnapshotBehind: a rebuild replaces a corrupted state
// with a sound replica's snapshot at or after its applied index, and
// refuses an older one without changing anything.
func TestRebuildRefusesASnapshotBehind(t *testing.T) {
	logs := randomLog(t, 9, 300)
	_, sound := newChannel1(t)
	applyInBatches(t, sound, logs[:200], 1, 8)
	old := snapshotBytes(t, sound)
	applyInBatches(t, sound, logs[200:], 2, 8)
	_, bad := newChannel1(t)
	applyInBatches(t, bad, logs, 3, 8)
	entries, _, _ := bad.List(nil, nil, 1)
	if err := bad.OverwriteForTest(entries[0].Key, []byte("wrong")); err != nil {
		t.Fatal(err)
	}
	if err := bad.Rebuild(readCloser(old)); !errors.Is(err, ErrSnapshotBehind) {
		t.Fatalf("Rebuild from an older snapshot = %v, want ErrSnapshotBehind", err)
	}
	if e, _ := mustGet(t, bad, string(entries[0].Key)); string(e.Value) != "wrong" || bad.Applied() != sound.Applied() {
		t.Fatalf("a refused rebuild changed the state: %q at %d", e.Value, bad.Applied())
	}
	if err := bad.Rebuild(readCloser(snapshotBytes(t, sound))); err != nil {
		t.Fatal(err)
	}
	if stateHash(t, bad.s, 1) != stateHash(t, sound.s, 1) {
		t.Fatal("the rebuilt replica differs from the sound one")
	}
}
