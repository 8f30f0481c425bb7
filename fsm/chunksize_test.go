package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestValidateChunkSize(t *testing.T) {
	for _, c := range []struct {
		n  uint64
		ok bool
	}{
		{0, false}, {1, false}, {32 << 10, false}, {64 << 10, true}, {96 << 10, false},
		{1 << 20, true}, {DefaultChunkSize, true}, {(1 << 20) + 1, false},
		{MaxChunkSize, true}, {MaxChunkSize + 64<<10, false}, {1 << 40, false},
	} {
		err := ValidateChunkSize(c.n)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrInvalidChunkSize) {
			t.Errorf("ValidateChunkSize(%d) = %v, want ok %v", c.n, err, c.ok)
		}
	}
}

// A channel's chunk size is set at creation or later, goes back to the
// default with 0, changes the channel's modify index, survives a snapshot,
// and a size out of bounds changes nothing.
func TestChannelChunkSize(t *testing.T) {
	m := NewMeta()
	apply := func(i uint64, c MetaCommand) *MetaResult {
		return m.Apply(metaLog(t, i, c)).(*MetaResult)
	}
	apply(1, &UpsertNode{Node: NodeRecord{ID: "a", ServerID: "a@1"}})
	pl := []Replica{{NodeID: "a", ServerID: "a@1"}}
	if r := apply(2, &CreateChannel{Channel: ChannelRecord{Name: "x", Replicas: 1, Placement: pl, ChunkSize: 1 << 20}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(3, &CreateChannel{Channel: ChannelRecord{Name: "bad", Replicas: 1, Placement: pl, ChunkSize: 1000}}); !errors.Is(r.Err, ErrInvalidChunkSize) {
		t.Fatalf("a channel created with 1000-byte chunks: %v", r.Err)
	}
	if _, ok := m.Channel("bad"); ok {
		t.Fatal("a refused creation made the channel")
	}
	if ch, _ := m.Channel("x"); ch.ChunkSize != 1<<20 {
		t.Fatalf("created: %+v", ch)
	}
	if r := apply(4, &SetChannelChunkSize{Channel: "x", ChunkSize: 64 << 20}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for i, c := range []*SetChannelChunkSize{
		{Channel: "x", ChunkSize: 128 << 20},
		{Channel: "x", ChunkSize: (1 << 20) + 1},
		{Channel: "y", ChunkSize: 1 << 20},
	} {
		if r := apply(uint64(5+i), c); r.Err == nil {
			t.Fatalf("case %d applied", i)
		}
	}
	if ch, _ := m.Channel("x"); ch.ChunkSize != 64<<20 || ch.ModifyIndex != 4 {
		t.Fatalf("after the changes: %+v", ch)
	}
	var sink bufSink
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	m2 := NewMeta()
	if err := m2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if ch, _ := m2.Channel("x"); ch.ChunkSize != 64<<20 {
		t.Fatalf("restored: %+v", ch)
	}
	if r := apply(10, &SetChannelChunkSize{Channel: "x"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if ch, _ := m.Channel("x"); ch.ChunkSize != 0 {
		t.Fatalf("back to the default: %+v", ch)
	}
}
