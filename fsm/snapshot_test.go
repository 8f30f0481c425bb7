package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strconv"
	"testing"
)

func TestSnapshotRestoreIntoAnotherStore(t *testing.T) {
	logs := randomLog(t, 21, 600)
	sa, a := newChannel1(t)
	applyInBatches(t, a, logs[:400], 1, 32)
	stream := snapshotBytes(t, a)

	// The target already has other state, at a higher index: Restore
	// replaces it whole and moves the applied index backwards.
	sb := openStore(t, t.TempDir())
	b := openChannel(t, sb, 1)
	applyInBatches(t, b, randomLog(t, 99, 700), 2, 32)
	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if b.Applied() != a.Applied() {
		t.Fatalf("Applied = %d, want %d", b.Applied(), a.Applied())
	}
	if stateHash(t, sa, 1) != stateHash(t, sb, 1) {
		t.Fatal("restored state differs")
	}
	if a.Stats() != b.Stats() {
		t.Fatalf("stats %+v vs %+v", b.Stats(), a.Stats())
	}
	if g := generations(t, sb, 1); len(g) != 1 || g[0] != 2 {
		t.Fatalf("generations after restore = %v, want [2]", g)
	}
	// Both continue identically.
	applyInBatches(t, a, logs[400:], 3, 32)
	applyInBatches(t, b, logs[400:], 4, 32)
	if stateHash(t, sa, 1) != stateHash(t, sb, 1) {
		t.Fatal("states diverge after restore")
	}
	// Its own snapshot is byte for byte the source's.
	if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
		t.Fatal("snapshots of identical states differ")
	}
	// The restored generation survives a reopen.
	want := stateHash(t, sb, 1)
	b.Close()
	b = openChannel(t, sb, 1)
	if stateHash(t, sb, 1) != want || b.Applied() != a.Applied() {
		t.Fatal("restored state lost across reopen")
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	logs := randomLog(t, 5, 300)
	sa, a := newChannel1(t)
	applyInBatches(t, a, logs[:150], 1, 16)
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	// Applies continue while the snapshot is persisted.
	applyInBatches(t, a, logs[150:], 2, 16)
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}

	sref, ref := newChannel1(t)
	applyInBatches(t, ref, logs[:150], 3, 16)
	_, b := newChannel1(t)
	if err := b.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if b.Applied() != ref.Applied() || stateHash(t, b.s, 1) != stateHash(t, sref, 1) {
		t.Fatal("snapshot is not the state at the time Snapshot was called")
	}
	_ = sa
}

func TestSnapshotEmptyChannel(t *testing.T) {
	_, a := newChannel1(t)
	stream := snapshotBytes(t, a)
	_, b := newChannel1(t)
	applyOne(t, b, 1, put("x", "y"))
	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if b.Applied() != 0 || b.Stats().Keys != 0 {
		t.Fatalf("after restoring an empty snapshot: %+v", b.Stats())
	}
	if _, found := mustGet(t, b, "x"); found {
		t.Fatal("old key survived the restore")
	}
}

// badStreams derives broken streams from a valid one.
func badStreams(valid []byte) map[string][]byte {
	out := map[string][]byte{
		"empty":          {},
		"trailing bytes": append(append([]byte(nil), valid...), 0),
	}
	for _, n := range []int{1, 8, 12, 27, 28, 29, 40, len(valid) / 2, len(valid) - 13, len(valid) - 5, len(valid) - 4, len(valid) - 1} {
		if n > 0 && n < len(valid) {
			out["truncated at "+itoa(n)] = valid[:n]
		}
	}
	for _, i := range []int{0, 9, 15, 23, 28, 30, 33, len(valid) / 2, len(valid) - 10, len(valid) - 2} {
		if i >= 0 && i < len(valid) {
			b := append([]byte(nil), valid...)
			b[i] ^= 0x10
			out["bit flipped at "+itoa(i)] = b
		}
	}
	// A well-formed stream whose header lies about the key count, with a
	// checksum that matches: the counts must still be checked.
	b := append([]byte(nil), valid...)
	binary.BigEndian.PutUint64(b[20:], binary.BigEndian.Uint64(b[20:])+1)
	out["wrong key count, valid checksum"] = reseal(b)
	return out
}

func itoa(n int) string { return strconv.Itoa(n) }

// reseal recomputes the trailing checksum of a stream.
func reseal(b []byte) []byte {
	body := b[:len(b)-4]
	sum := crc32.Checksum(body, crcTable)
	return binary.BigEndian.AppendUint32(append([]byte(nil), body...), sum)
}

func TestRestoreBadStreamKeepsState(t *testing.T) {
	_, src := newChannel1(t)
	applyInBatches(t, src, randomLog(t, 3, 200), 1, 16)
	valid := snapshotBytes(t, src)

	s, c := newChannel1(t)
	applyInBatches(t, c, randomLog(t, 4, 100), 2, 16)
	want, applied := stateHash(t, s, 1), c.Applied()
	for name, stream := range badStreams(valid) {
		t.Run(name, func(t *testing.T) {
			err := c.Restore(io.NopCloser(bytes.NewReader(stream)))
			if err == nil {
				t.Fatal("Restore accepted a broken stream")
			}
			if c.Applied() != applied || stateHash(t, s, 1) != want {
				t.Fatal("a failed Restore changed the state")
			}
			if g := generations(t, s, 1); len(g) != 1 || g[0] != 1 {
				t.Fatalf("generations after a failed restore = %v, want [1]", g)
			}
			if e, ok := mustGet(t, c, "k/00"); ok && e.ModifyIndex > applied {
				t.Fatal("read a key from the partial generation")
			}
		})
	}
	// The channel still restores a good stream afterwards.
	if err := c.Restore(io.NopCloser(bytes.NewReader(valid))); err != nil {
		t.Fatal(err)
	}
	if c.Applied() != src.Applied() {
		t.Fatal("good restore after bad ones failed")
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestRestoreReadError(t *testing.T) {
	_, c := newChannel1(t)
	applyOne(t, c, 1, put("a", "1"))
	boom := errors.New("boom")
	err := c.Restore(io.NopCloser(errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("Restore = %v, want the read error", err)
	}
	if e, ok := mustGet(t, c, "a"); !ok || string(e.Value) != "1" {
		t.Fatal("state lost")
	}
}

func FuzzRestore(f *testing.F) {
	s := openStore(f, f.TempDir())
	src := openChannel(f, s, 100)
	applyInBatches(f, src, randomLog(f, 8, 60), 1, 8)
	valid := snapshotBytes(f, src)
	f.Add(valid)
	for _, b := range badStreams(valid) {
		f.Add(b)
	}
	// A version 2 stream, with idempotency records.
	keyedSrc := openChannel(f, s, 101)
	applyInBatches(f, keyedSrc, randomKeyedLog(f, 8, 40), 1, 8)
	f.Add(snapshotBytes(f, keyedSrc))
	c := openChannel(f, s, 1)
	applyOne(f, c, 1, put("keep", "me"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		before, applied := stateHash(t, s, 1), c.Applied()
		err := c.Restore(io.NopCloser(bytes.NewReader(stream)))
		if err != nil {
			if stateHash(t, s, 1) != before || c.Applied() != applied {
				t.Fatalf("failed Restore (%v) changed the state", err)
			}
		} else {
			// Accepted: the state must be self-consistent.
			if got := liveBytes(t, c); got != c.Stats().Bytes {
				t.Fatalf("Bytes %d, recount %d", c.Stats().Bytes, got)
			}
			es, _, _ := c.List(nil, nil, 0)
			if uint64(len(es)) != c.Stats().Keys {
				t.Fatalf("Keys %d, listed %d", c.Stats().Keys, len(es))
			}
		}
		if g := generations(t, s, 1); len(g) > 1 {
			t.Fatalf("generations = %v", g)
		}
	})
}
