package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// A restored channel is recorded as a created one, with its source, which
// survives the meta snapshot; without a source it is refused.
func TestCreateRestoredChannel(t *testing.T) {
	m := NewMeta()
	apply := func(i uint64, c MetaCommand) *MetaResult { return m.Apply(metaLog(t, i, c)).(*MetaResult) }
	src := &RestoreSource{Node: "n2", ID: "ab12", ServerID: "n1@1", Index: 900, Term: 3, Bytes: 4096}
	rec := ChannelRecord{Name: "r", Replicas: 1, Placement: []Replica{{NodeID: "n1", ServerID: "n1@1"}}}
	if r := apply(1, &CreateRestoredChannel{Channel: rec}); !errors.Is(r.Err, ErrInvalidRestore) {
		t.Fatalf("without a source: %v", r.Err)
	}
	if _, ok := m.Channel("r"); ok {
		t.Fatal("a refused restore created the channel")
	}
	rec.Restore = src
	if r := apply(2, &CreateRestoredChannel{Channel: rec}); r.Err != nil || r.GroupID != 1 {
		t.Fatalf("create restored: %+v", r)
	}
	if r := apply(3, &CreateRestoredChannel{Channel: rec}); !errors.Is(r.Err, ErrChannelExists) {
		t.Fatalf("again: %v", r.Err)
	}
	src.Index = 1 // the record holds its own copy
	snap, _ := m.Snapshot()
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	r := NewMeta()
	if err := r.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	ch, ok := r.Channel("r")
	if !ok || ch.Restore == nil || ch.Restore.Index != 900 || ch.Restore.Node != "n2" || ch.CreateIndex != 2 {
		t.Fatalf("restored record %+v (source %+v)", ch, ch.Restore)
	}
	// A plain channel's record has no source, and its JSON no field.
	apply(4, &CreateChannel{Channel: ChannelRecord{Name: "p"}})
	if ch, _ := m.Channel("p"); ch.Restore != nil {
		t.Fatalf("plain channel with a source: %+v", ch.Restore)
	}
	if bytes.Contains(sink.Bytes(), []byte(`"restore":null`)) {
		t.Fatal("the meta snapshot writes an empty restore field")
	}
}
