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

// RecoverChannel moves a channel to a new group and retires the old one,
// once: a second recovery of the same old group is refused.
func TestRecoverChannelRecord(t *testing.T) {
	m := NewMeta()
	apply := func(i uint64, c MetaCommand) *MetaResult { return m.Apply(metaLog(t, i, c)).(*MetaResult) }
	apply(1, &CreateChannel{Channel: ChannelRecord{Name: "c", Replicas: 3, QuotaBytes: 9,
		Placement: []Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "d", ServerID: "d@1"}}}})
	old, _ := m.Channel("c")
	rc := &RecoverChannel{Name: "c", OldGroup: old.GroupID,
		Placement: []Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "e", ServerID: "e@1"}},
		Restore:   RestoreSource{Node: "a", ID: "ff", ServerID: "a@1", Index: 50}}
	if r := apply(2, &RecoverChannel{Name: "nope", OldGroup: 1, Placement: rc.Placement}); !errors.Is(r.Err, ErrChannelNotFound) {
		t.Fatalf("unknown channel: %v", r.Err)
	}
	r := apply(3, rc)
	if r.Err != nil || r.GroupID == old.GroupID {
		t.Fatalf("recover: %+v", r)
	}
	ch, _ := m.Channel("c")
	if ch.GroupID != r.GroupID || ch.CreateIndex != 3 || ch.Replicas != 2 || ch.QuotaBytes != 9 ||
		len(ch.RetiredGroups) != 1 || ch.RetiredGroups[0] != old.GroupID || ch.Restore == nil || ch.Restore.Index != 50 ||
		ch.HasNode("b") || !ch.HasNode("e") {
		t.Fatalf("recovered record %+v", ch)
	}
	if r := apply(4, rc); !errors.Is(r.Err, ErrGroupMoved) {
		t.Fatalf("second recovery of the old group: %v", r.Err)
	}
}
