package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// keyed wraps cmd under key in scope "s", with the hash of cmd's encoding
// (what the server does) and window w.
func keyed(t testing.TB, key string, w uint64, cmd Command) *Idempotent {
	t.Helper()
	return keyedIn(t, "s", key, w, cmd)
}

func keyedIn(t testing.TB, scope, key string, w uint64, cmd Command) *Idempotent {
	t.Helper()
	b, err := Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &Idempotent{Scope: []byte(scope), Key: []byte(key), Hash: sha256.Sum256(b), Window: w, Cmd: cmd}
}

// idemRecords counts the idempotency records and queue entries stored for
// channel 1.
func idemRecords(t testing.TB, c *Channel) (records, queue int) {
	t.Helper()
	lo := dataKey(c.gid, c.gen, []byte{0})
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: dataKey(c.gid, c.gen, userKeysStart)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		switch it.Key()[genPrefixLen+1] {
		case idemRecordTag:
			records++
		case idemExpiryTag:
			queue++
		}
	}
	return records, queue
}

func TestIdempotentCodecRoundTrip(t *testing.T) {
	for _, cmd := range []Command{
		keyed(t, "k", 5, put("a", "1")),
		keyed(t, "k-2_~!", MaxIdemWindow, putCAS("a", "1", 7)),
		keyedIn(t, "", "x", 1, delCAS("a", 0)),
		keyed(t, "t", 100, &Txn{Success: []Op{{Type: OpGet, Key: []byte("a")}}}),
	} {
		b, err := Encode(cmd)
		if err != nil {
			t.Fatalf("Encode(%+v): %v", cmd, err)
		}
		if EntryVersion(b) != 3 {
			t.Fatalf("EntryVersion = %d, want 3", EntryVersion(b))
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		again, err := Encode(got)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("Encode(Decode(b)) = %x, %v; want %x", again, err, b)
		}
	}
	inner, _ := Encode(put("a", "1"))
	bad := []struct {
		name string
		cmd  Command
	}{
		{"empty key", &Idempotent{Key: nil, Window: 1, Cmd: put("a", "1")}},
		{"space in key", &Idempotent{Key: []byte("a b"), Window: 1, Cmd: put("a", "1")}},
		{"non-ASCII key", &Idempotent{Key: []byte("é"), Window: 1, Cmd: put("a", "1")}},
		{"long key", &Idempotent{Key: bytes.Repeat([]byte("k"), MaxIdemKeyBytes+1), Window: 1, Cmd: put("a", "1")}},
		{"long scope", &Idempotent{Scope: make([]byte, MaxIdemScopeBytes+1), Key: []byte("k"), Window: 1, Cmd: put("a", "1")}},
		{"zero window", &Idempotent{Key: []byte("k"), Window: 0, Cmd: put("a", "1")}},
		{"nested", &Idempotent{Key: []byte("k"), Window: 1, Cmd: keyed(t, "k", 1, put("a", "1"))}},
		{"hash check", &Idempotent{Key: []byte("k"), Window: 1, Cmd: &HashCheck{}}},
		{"bad inner", &Idempotent{Key: []byte("k"), Window: 1, Cmd: put("", "1")}},
	}
	for _, tc := range bad {
		if _, err := Encode(tc.cmd); err == nil {
			t.Errorf("%s: Encode accepted %+v", tc.name, tc.cmd)
		}
	}
	// A wrapped entry of another type, or a truncated one, does not decode.
	good, _ := Encode(keyed(t, "k", 5, put("a", "1")))
	for _, b := range [][]byte{
		good[:len(good)-1],
		append(good[:len(good)-len(inner):len(good)-len(inner)], typeHashCheck),
		append(append([]byte(nil), good[:len(good)-len(inner)]...), good...),
	} {
		if _, err := Decode(b); !errors.Is(err, ErrDecode) {
			t.Errorf("Decode(%x) = %v, want ErrDecode", b, err)
		}
	}
}

// TestIdempotentMayGrow: a keyed delete is a delete for the quota, so a
// channel over its quota can still be cleaned up by clients that key every
// write.
func TestIdempotentMayGrow(t *testing.T) {
	for _, tc := range []struct {
		cmd  Command
		grow bool
	}{
		{keyed(t, "k", 5, del("a")), false},
		{keyed(t, "k", 5, delCAS("a", 9)), false},
		{keyed(t, "k", 5, put("a", "1")), true},
		{keyed(t, "k", 5, &Txn{Success: []Op{{Type: OpDelete, Key: []byte("a")}}}), true},
	} {
		b, err := Encode(tc.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if got := MayGrow(b); got != tc.grow {
			t.Errorf("MayGrow(%+v) = %v, want %v", tc.cmd, got, tc.grow)
		}
	}
}

// TestIdempotentReplaysFirstOutcome: a retry with the same key and request
// answers the first outcome (index, error, txn results) and applies
// nothing; another request under the key is refused and applies nothing.
func TestIdempotentReplaysFirstOutcome(t *testing.T) {
	s, c := newChannel1(t)
	const w = 100
	first := applyOne(t, c, 1, keyed(t, "p", w, putCAS("a", "1", 0)))
	if first.Err != nil {
		t.Fatalf("first put: %v", first.Err)
	}
	applyOne(t, c, 2, put("b", "x")) // unkeyed writes in between
	before := stateHash(t, s, 1)
	retry := c.Apply(cmdLog(t, 3, keyed(t, "p", w, putCAS("a", "1", 0)))).(*Result)
	if retry.Index != 1 || retry.Err != nil {
		t.Fatalf("retry = %+v, want the first outcome (index 1, no error)", retry)
	}
	if e, _ := mustGet(t, c, "a"); e.ModifyIndex != 1 || e.CreateIndex != 1 {
		t.Fatalf("a after the retry: %+v, want written once at 1", e)
	}
	// Only the applied index moved.
	if c.Applied() != 3 {
		t.Fatalf("applied %d", c.Applied())
	}

	// Another request under the same key: refused, nothing applied.
	reused := c.Apply(cmdLog(t, 4, keyed(t, "p", w, putCAS("a", "2", 0)))).(*Result)
	if !errors.Is(reused.Err, ErrIdempotencyKeyReused) || reused.Index != 4 {
		t.Fatalf("reused key = %+v, want ErrIdempotencyKeyReused at 4", reused)
	}
	if e, _ := mustGet(t, c, "a"); string(e.Value) != "1" || e.ModifyIndex != 1 {
		t.Fatalf("a after the refused reuse: %+v", e)
	}
	_ = before

	// A business failure is an outcome too: a CAS mismatch replays as such.
	mm := applyOne(t, c, 5, keyed(t, "m", w, putCAS("a", "3", 99)))
	if !errors.Is(mm.Err, ErrCASMismatch) {
		t.Fatalf("cas put: %+v", mm)
	}
	applyOne(t, c, 6, put("a", "changed"))
	mm2 := c.Apply(cmdLog(t, 7, keyed(t, "m", w, putCAS("a", "3", 99)))).(*Result)
	if mm2.Index != 5 || !errors.Is(mm2.Err, ErrCASMismatch) {
		t.Fatalf("cas retry = %+v, want the mismatch at 5", mm2)
	}
	dm := applyOne(t, c, 8, keyed(t, "d", w, del("nope")))
	if dm2 := c.Apply(cmdLog(t, 9, keyed(t, "d", w, del("nope")))).(*Result); dm2.Index != 8 || !errors.Is(dm2.Err, ErrKeyNotFound) || !errors.Is(dm.Err, ErrKeyNotFound) {
		t.Fatalf("delete retry = %+v, want not found at 8", dm2)
	}

	// A txn's results, the values its gets read included, replay as
	// they were, though the key changed since.
	txn := &Txn{
		Compares: []Compare{{Key: []byte("a"), Target: TargetValue, Result: Equal, Value: []byte("changed")}},
		Success:  []Op{{Type: OpPut, Key: []byte("a"), Value: []byte("t")}, {Type: OpGet, Key: []byte("a")}, {Type: OpDelete, Key: []byte("b")}},
	}
	tr := applyOne(t, c, 10, keyed(t, "t", w, txn))
	applyOne(t, c, 11, put("a", "later"))
	tr2 := c.Apply(cmdLog(t, 12, keyed(t, "t", w, txn))).(*Result)
	if tr2.Index != 10 || !tr2.Succeeded || !equalOps(tr.Ops, tr2.Ops) || string(tr2.Ops[1].Entry.Value) != "t" {
		t.Fatalf("txn retry = %+v, want %+v", tr2, tr)
	}
	if e, _ := mustGet(t, c, "a"); string(e.Value) != "later" {
		t.Fatalf("the txn retry applied again: a = %q", e.Value)
	}

	// Keys belong to their scope.
	other := applyOne(t, c, 13, keyedIn(t, "other", "p", w, putCAS("a", "1", 0)))
	if !errors.Is(other.Err, ErrCASMismatch) || other.Index != 13 {
		t.Fatalf("same key in another scope = %+v, want its own outcome (a mismatch at 13)", other)
	}
}

// TestIdempotentInFlightRetry: two attempts of one write in the same batch
// (a retry sent while the first was still in flight) apply once.
func TestIdempotentInFlightRetry(t *testing.T) {
	_, c := newChannel1(t)
	cmd := keyed(t, "k", 10, put("a", "1"))
	rs := c.ApplyBatch([]*raft.Log{cmdLog(t, 1, cmd), cmdLog(t, 2, cmd)})
	r1, r2 := rs[0].(*Result), rs[1].(*Result)
	if r1.Index != 1 || r2.Index != 1 || r2.Err != nil {
		t.Fatalf("results %+v, %+v; want both the write at 1", r1, r2)
	}
	if e, _ := mustGet(t, c, "a"); e.ModifyIndex != 1 {
		t.Fatalf("a written at %d, want 1", e.ModifyIndex)
	}
}

// TestIdempotentWindow: a record answers retries for Window entries after
// its write, then the key is free; expired records are pruned by later
// keyed writes, so they stay bounded.
func TestIdempotentWindow(t *testing.T) {
	_, c := newChannel1(t)
	applyOne(t, c, 1, keyed(t, "k", 3, put("a", "1")))
	if r := c.Apply(cmdLog(t, 3, keyed(t, "k", 3, put("a", "1")))).(*Result); r.Index != 1 {
		t.Fatalf("retry inside the window = %+v, want a replay of 1", r)
	}
	if r := applyOne(t, c, 4, keyed(t, "k", 3, put("a", "1"))); r.Err != nil {
		t.Fatalf("retry at the window's end = %+v, want a new write at 4", r)
	}
	if e, _ := mustGet(t, c, "a"); e.ModifyIndex != 4 {
		t.Fatalf("a = %+v, want rewritten at 4", e)
	}
	// Now a different request under the key is refused again (the new
	// record lives until 7).
	if r := c.Apply(cmdLog(t, 5, keyed(t, "k", 3, put("a", "2")))).(*Result); !errors.Is(r.Err, ErrIdempotencyKeyReused) {
		t.Fatalf("reuse after the rewrite = %+v", r)
	}
	if rec, q := idemRecords(t, c); rec != 1 || q != 1 {
		t.Fatalf("%d records, %d queue entries; want 1 and 1", rec, q)
	}

	// Many distinct keys with a window of 10: the records stay within
	// the window plus what idemPruneMax has not caught up with.
	index := uint64(5)
	for i := range 500 {
		index++
		applyOne(t, c, index, keyed(t, fmt.Sprintf("key-%d", i), 10, put("b", "x")))
		if rec, q := idemRecords(t, c); rec != q || rec > 11 {
			t.Fatalf("after %d writes: %d records, %d queue entries; want equal and at most 11", i, rec, q)
		}
	}
	// Unkeyed writes prune nothing; one keyed write prunes up to
	// idemPruneMax.
	for range 20 {
		index++
		applyOne(t, c, index, put("b", "y"))
	}
	r0, _ := idemRecords(t, c)
	index++
	applyOne(t, c, index, keyed(t, "last", 10, put("b", "z")))
	if r1, _ := idemRecords(t, c); r1 != r0-idemPruneMax+1 {
		t.Fatalf("%d records before a keyed write, %d after; want %d pruned and 1 added", r0, r1, idemPruneMax)
	}
}

// randomKeyedLog is randomLog with most writes under idempotency keys
// drawn from a small set, in two scopes, with small windows: retries,
// reuses, expiries and prunes all happen.
func randomKeyedLog(t testing.TB, seed uint64, n int) []*raft.Log {
	rng := rand.New(rand.NewPCG(seed, 3))
	logs := randomLog(t, seed, n)
	var prev []*Idempotent
	for i, l := range logs {
		if l.Type != raft.LogCommand || rng.IntN(5) == 0 {
			continue
		}
		cmd, err := Decode(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		k := keyedIn(t, fmt.Sprint("s", rng.IntN(2)), fmt.Sprint("key-", rng.IntN(40)), uint64(1+rng.IntN(60)), cmd)
		if len(prev) > 0 && rng.IntN(3) == 0 {
			// A retry of a recent keyed write (replayed, or applied
			// anew when its record expired).
			k = prev[len(prev)-1-rng.IntN(min(len(prev), 20))]
		}
		prev = append(prev, k)
		logs[i] = cmdLog(t, l.Index, k)
	}
	return logs
}

// TestIdempotentDeterminism: replicas applying the same keyed log in
// different batchings hold the same state, records included, give the same
// results and hash the same for a hash check.
func TestIdempotentDeterminism(t *testing.T) {
	logs := randomKeyedLog(t, 17, 1500)
	sa, a := newChannel1(t)
	sb, b := newChannel1(t)
	ra := flatten(applyInBatches(t, a, logs, 1, 1))
	rb := flatten(applyInBatches(t, b, logs, 2, 64))
	if ha, hb := stateHash(t, sa, 1), stateHash(t, sb, 1); ha != hb {
		t.Fatalf("state differs: %s vs %s", ha, hb)
	}
	for i := range ra {
		if fmt.Sprintf("%+v", ra[i]) != fmt.Sprintf("%+v", rb[i]) {
			t.Fatalf("result %d differs: %+v vs %+v", i, ra[i], rb[i])
		}
	}
	replays, reuses := 0, 0
	for i, r := range ra {
		if res, ok := r.(*Result); ok {
			if res.Index != logs[i].Index {
				replays++
			}
			if errors.Is(res.Err, ErrIdempotencyKeyReused) {
				reuses++
			}
		}
	}
	if replays == 0 || reuses == 0 {
		t.Fatalf("%d replays, %d reuses: the log exercises little", replays, reuses)
	}
	if rec, _ := idemRecords(t, a); rec == 0 {
		t.Fatal("no records left; the hash compares little")
	}
	ha, _, err := hashState(sa.db, 1, a.gen, nil)
	if err != nil {
		t.Fatal(err)
	}
	hb, _, err := hashState(sb.db, 1, b.gen, nil)
	if err != nil || ha != hb {
		t.Fatalf("hash check: %x vs %x (%v)", ha, hb, err)
	}
	if got := liveBytes(t, a); a.Stats().Bytes != got {
		t.Fatalf("Stats.Bytes = %d, recount %d: records counted as keys", a.Stats().Bytes, got)
	}
}

// TestIdempotentRecordsAreHashed: the hash check covers the records, so a
// replica that lost one is found out.
func TestIdempotentRecordsAreHashed(t *testing.T) {
	sa, a := newChannel1(t)
	sb, b := newChannel1(t)
	applyOne(t, a, 1, keyed(t, "k", 10, put("a", "1")))
	applyOne(t, b, 1, put("a", "1"))
	ha, _, _ := hashState(sa.db, 1, a.gen, nil)
	hb, _, _ := hashState(sb.db, 1, b.gen, nil)
	if ha == hb {
		t.Fatal("a keyed and an unkeyed write hash the same: the records are not hashed")
	}
	// And the user-facing reads do not see them.
	if es, _, err := a.List(nil, nil, 0); err != nil || len(es) != 1 || string(es[0].Key) != "a" {
		t.Fatalf("List = %+v, %v; want only a", es, err)
	}
	if a.Stats().Keys != 1 {
		t.Fatalf("Stats = %+v", a.Stats())
	}
}

// TestIdempotentSnapshotRestoreAndReopen: the records travel in snapshots
// and survive a restart; a retry after either replays.
func TestIdempotentSnapshotRestoreAndReopen(t *testing.T) {
	logs := randomKeyedLog(t, 23, 400)
	sa, a := newChannel1(t)
	applyInBatches(t, a, logs, 1, 16)
	last := logs[len(logs)-1].Index
	first := applyOne(t, a, last+1, keyed(t, "mine", 1000, putCAS("z", "1", 0)))
	stream := snapshotBytes(t, a)
	if v := binary.BigEndian.Uint32(stream[8:]); v != snapshotVersionV2 {
		t.Fatalf("snapshot version %d, want %d", v, snapshotVersionV2)
	}

	dir := t.TempDir()
	sb := openStore(t, dir)
	b := openChannel(t, sb, 1)
	applyInBatches(t, b, randomKeyedLog(t, 5, 100), 2, 16)
	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if stateHash(t, sa, 1) != stateHash(t, sb, 1) {
		t.Fatal("restored state differs")
	}
	if !bytes.Equal(snapshotBytes(t, b), stream) {
		t.Fatal("the restored replica's snapshot differs from the source's")
	}
	// A restart of the restored replica.
	b.Close()
	sb.Close()
	sb = openStore(t, dir)
	b = openChannel(t, sb, 1)
	r := b.Apply(cmdLog(t, last+2, keyed(t, "mine", 1000, putCAS("z", "1", 0)))).(*Result)
	if r.Index != first.Index || r.Err != nil {
		t.Fatalf("retry after restore and reopen = %+v, want the write at %d", r, first.Index)
	}
	if e, _ := mustGet(t, b, "z"); e.ModifyIndex != first.Index {
		t.Fatalf("z = %+v, want written once at %d", e, first.Index)
	}

	// A stream without records is still version 1, which older nodes read.
	_, c := newChannel1(t)
	applyOne(t, c, 1, put("a", "1"))
	if v := binary.BigEndian.Uint32(snapshotBytes(t, c)[8:]); v != snapshotVersion {
		t.Fatalf("snapshot without records: version %d, want %d", v, snapshotVersion)
	}

	// A damaged record is refused, not loaded.
	bads := badStreams(stream)
	wrong := append([]byte(nil), stream...)
	n := len(wrong) - 4 - 8
	binary.BigEndian.PutUint64(wrong[n:], binary.BigEndian.Uint64(wrong[n:])+1)
	bads["wrong record count, valid checksum"] = reseal(wrong)
	for name, bad := range bads {
		_, d := newChannel1(t)
		if err := d.Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
			t.Errorf("%s: a damaged v2 stream was restored", name)
		}
	}
}

// TestIdempotentExpiredRecordReplaced: a record that expired but is not
// pruned yet (more expired at once than a write prunes) is replaced by a
// new write under its key, and its queue entry is not pruned later in its
// place: replicas with and without a reopen (the in-memory queue rebuilt
// from the state) end with the same state.
func TestIdempotentExpiredRecordReplaced(t *testing.T) {
	var logs []*raft.Log
	for i := range 12 { // k00..k11 at 1..12, all expiring at 20
		index := uint64(i + 1)
		logs = append(logs, cmdLog(t, index, keyed(t, fmt.Sprintf("k%02d", i), 20-index, put("a", fmt.Sprint(i)))))
	}
	// At 25, k11 again: the write prunes k00..k03 first, then finds k11
	// expired and writes anew.
	logs = append(logs, cmdLog(t, 25, keyed(t, "k11", 100, put("a", "new"))))
	for i := range 5 { // later writes prune the rest, the replaced k11 entry last
		logs = append(logs, cmdLog(t, uint64(26+i), keyed(t, fmt.Sprint("later-", i), 100, put("b", "x"))))
	}
	logs = append(logs, cmdLog(t, 40, keyed(t, "k11", 100, put("a", "new"))))

	sa, a := newChannel1(t)
	res := flatten(applyInBatches(t, a, logs, 1, 1))
	if r := res[12].(*Result); r.Index != 25 || r.Err != nil {
		t.Fatalf("k11 after its expiry = %+v, want a new write at 25", r)
	}
	if r := res[len(res)-1].(*Result); r.Index != 25 {
		t.Fatalf("k11's retry at 40 = %+v, want the write at 25 (its new record pruned by mistake?)", r)
	}
	if rec, q := idemRecords(t, a); rec != 6 || q != 6 {
		t.Fatalf("%d records, %d queue entries; want 6 (k11 and later-0..4)", rec, q)
	}

	dir := t.TempDir()
	sb := openStore(t, dir)
	b := openChannel(t, sb, 1)
	applyInBatches(t, b, logs[:14], 2, 8)
	b.Close()
	b = openChannel(t, sb, 1)
	applyInBatches(t, b, logs[14:], 3, 8)
	if stateHash(t, sa, 1) != stateHash(t, sb, 1) {
		t.Fatal("a replica that reopened half way holds another state")
	}
}
