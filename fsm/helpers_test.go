package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openChannel(t testing.TB, s *Store, gid uint64) *Channel {
	t.Helper()
	c, err := s.Channel(gid)
	if err != nil {
		t.Fatalf("Channel(%d): %v", gid, err)
	}
	return c
}

func newChannel1(t testing.TB) (*Store, *Channel) {
	s := openStore(t, t.TempDir())
	return s, openChannel(t, s, 1)
}

func cmdLog(t testing.TB, index uint64, c Command) *raft.Log {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatalf("Encode(%+v): %v", c, err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b}
}

func applyOne(t testing.TB, c *Channel, index uint64, cmd Command) *Result {
	t.Helper()
	r := c.Apply(cmdLog(t, index, cmd))
	res, ok := r.(*Result)
	if !ok {
		t.Fatalf("Apply(%d) = %#v, want a *Result", index, r)
	}
	if res.Index != index {
		t.Fatalf("Result.Index = %d, want %d", res.Index, index)
	}
	return res
}

func put(k, v string) *Put { return &Put{Key: []byte(k), Value: []byte(v)} }
func putCAS(k, v string, cas uint64) *Put {
	return &Put{Key: []byte(k), Value: []byte(v), HasCAS: true, CAS: cas}
}
func del(k string) *Delete { return &Delete{Key: []byte(k)} }
func delCAS(k string, cas uint64) *Delete {
	return &Delete{Key: []byte(k), HasCAS: true, CAS: cas}
}

func mustGet(t testing.TB, c *Channel, key string) (Entry, bool) {
	t.Helper()
	e, ok, err := c.Get([]byte(key))
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return e, ok
}

// stateHash hashes everything a channel's state consists of, as stored:
// every record of its live generation and the meta's applied index and
// counters (not the generation number, which differs after a restore).
func stateHash(t testing.TB, s *Store, gid uint64) string {
	t.Helper()
	meta, _, err := s.loadMeta(gid)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var b [8]byte
	for _, v := range []uint64{meta.applied, meta.keys, meta.bytes} {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	lo := genPrefix(gid, meta.gen)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		_, _, user, _ := parseDataKey(it.Key())
		binary.BigEndian.PutUint64(b[:], uint64(len(user)))
		h.Write(b[:])
		h.Write(user)
		v := it.Value()
		binary.BigEndian.PutUint64(b[:], uint64(len(v)))
		h.Write(b[:])
		h.Write(v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// generations lists the generations that hold data of gid.
func generations(t testing.TB, s *Store, gid uint64) []uint64 {
	t.Helper()
	lo := gidPrefix(gid)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var gens []uint64
	for valid := it.First(); valid; {
		_, gen, _, _ := parseDataKey(it.Key())
		gens = append(gens, gen)
		valid = it.SeekGE(prefixEnd(genPrefix(gid, gen)))
	}
	return gens
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func snapshotBytes(t testing.TB, c *Channel) []byte {
	t.Helper()
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}
