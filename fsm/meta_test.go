package fsm

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

func metaLog(t *testing.T, index uint64, c MetaCommand) *raft.Log {
	t.Helper()
	b, err := EncodeMeta(c)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: b}
}

func TestMetaCommands(t *testing.T) {
	m := NewMeta()
	apply := func(i uint64, c MetaCommand) *MetaResult {
		return m.Apply(metaLog(t, i, c)).(*MetaResult)
	}
	apply(1, &SetClusterID{ID: "c1"})
	apply(2, &SetClusterID{ID: "c2"})
	if m.ClusterID() != "c1" {
		t.Fatalf("cluster id = %q; the first one sticks", m.ClusterID())
	}
	apply(3, &UpsertNode{Node: NodeRecord{ID: "b", Role: RoleResource, ServerID: "b@1"}})
	apply(4, &UpsertNode{Node: NodeRecord{ID: "a", Role: RoleCore, ServerID: "a@1"}})
	if nodes := m.Nodes(); len(nodes) != 2 || nodes[0].ID != "a" || nodes[0].State != NodeAlive || nodes[0].CreateIndex != 4 {
		t.Fatalf("nodes = %+v", nodes)
	}
	if r := apply(5, &SetNodeState{ID: "b", State: NodeDead}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(6, &SetNodeState{ID: "zz", State: NodeDead}); !errors.Is(r.Err, ErrNodeNotFound) {
		t.Fatalf("state of unknown node: %v", r.Err)
	}
	// An update keeps the create index and, when it says nothing, the state.
	apply(7, &UpsertNode{Node: NodeRecord{ID: "b", Role: RoleResource, ServerID: "b@2"}})
	if n, _ := m.Node("b"); n.State != NodeDead || n.CreateIndex != 3 || n.ModifyIndex != 7 || n.ServerID != "b@2" {
		t.Fatalf("node b = %+v", n)
	}
	r := apply(8, &CreateChannel{Channel: ChannelRecord{Name: "x", Replicas: 1, Placement: []Replica{{NodeID: "a", ServerID: "a@1"}}}})
	if r.Err != nil || r.GroupID != 1 {
		t.Fatalf("create = %+v", r)
	}
	if r := apply(9, &CreateChannel{Channel: ChannelRecord{Name: "x"}}); !errors.Is(r.Err, ErrChannelExists) {
		t.Fatalf("duplicate: %v", r.Err)
	}
	apply(10, &DeleteChannel{Name: "x"})
	if r := apply(11, &DeleteChannel{Name: "x"}); !errors.Is(r.Err, ErrChannelNotFound) {
		t.Fatalf("delete missing: %v", r.Err)
	}
	// Group ids are never reused, even for a name created again.
	if r := apply(12, &CreateChannel{Channel: ChannelRecord{Name: "x"}}); r.GroupID != 2 {
		t.Fatalf("re-created group id = %d, want 2", r.GroupID)
	}
	if ch, ok := m.Channel("x"); !ok || ch.CreateIndex != 12 || ch.HasNode("a") {
		t.Fatalf("channel x = %+v", ch)
	}
	if m.Applied() != 12 {
		t.Fatalf("applied = %d", m.Applied())
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

func TestMetaSnapshotRestore(t *testing.T) {
	m := NewMeta()
	m.Apply(metaLog(t, 1, &SetClusterID{ID: "c"}))
	m.Apply(metaLog(t, 2, &UpsertNode{Node: NodeRecord{ID: "n1", Role: RoleCore}}))
	m.Apply(metaLog(t, 3, &CreateChannel{Channel: ChannelRecord{Name: "ch", Placement: []Replica{{NodeID: "n1"}}}}))
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	// Determinism: the same state persists to the same bytes.
	snap2, _ := m.Snapshot()
	var sink2 bufSink
	_ = snap2.Persist(&sink2)
	if !bytes.Equal(sink.Bytes(), sink2.Bytes()) {
		t.Fatal("snapshot bytes differ for the same state")
	}
	r := NewMeta()
	changed := r.Changed()
	if err := r.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("restore did not signal a change")
	}
	if r.Applied() != 3 || r.ClusterID() != "c" || len(r.Nodes()) != 1 {
		t.Fatalf("restored: applied %d, id %q, nodes %v", r.Applied(), r.ClusterID(), r.Nodes())
	}
	if ch, ok := r.Channel("ch"); !ok || ch.GroupID != 1 {
		t.Fatalf("restored channel = %+v", ch)
	}
	// The next group id survives the snapshot.
	res := r.Apply(metaLog(t, 4, &CreateChannel{Channel: ChannelRecord{Name: "ch2"}})).(*MetaResult)
	if res.GroupID != 2 {
		t.Fatalf("group id after restore = %d", res.GroupID)
	}
	for _, bad := range [][]byte{nil, []byte("{"), []byte(`{"version":99}`)} {
		if err := NewMeta().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
			t.Errorf("restore of %q succeeded", bad)
		}
	}
}

func TestDecodeMeta(t *testing.T) {
	for _, tc := range []struct {
		in      []byte
		wantErr bool
	}{
		{nil, true},
		{[]byte{0x41, '{'}, true},
		{[]byte{0x7e, '{', '}'}, true}, // unknown, not skippable
		{append([]byte{0x44}, `{"channel":{}}`...), false},
	} {
		_, err := DecodeMeta(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("DecodeMeta(%q) = %v", tc.in, err)
		}
	}
	// A skippable unknown entry is applied as a no-op.
	m := NewMeta()
	res := m.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{0xfe, '{', '}'}})
	if r, ok := res.(*MetaResult); !ok || r.Err != nil {
		t.Fatalf("skippable entry: %#v", res)
	}
}

func TestValidChannelName(t *testing.T) {
	for name, ok := range map[string]bool{
		"nft": true, "a-1": true, "0": true, "": false, "A": false, "a_b": false, "a.b": false,
		"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc":  true,
		"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd": false,
	} {
		if ValidChannelName(name) != ok {
			t.Errorf("ValidChannelName(%q) = %v", name, !ok)
		}
	}
}

// FuzzDecodeMeta: any entry decodes to a command or an error; a decoded
// command re-encodes and applies without panicking.
func FuzzDecodeMeta(f *testing.F) {
	for _, c := range []MetaCommand{&SetClusterID{ID: "x"}, &UpsertNode{Node: NodeRecord{ID: "n"}}, &CreateChannel{Channel: ChannelRecord{Name: "c"}}, &DeleteChannel{Name: "c"}} {
		b, _ := EncodeMeta(c)
		f.Add(b)
	}
	f.Add([]byte{0x44, '{'})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeMeta(b)
		if err != nil {
			return
		}
		if _, err := EncodeMeta(c); err != nil {
			t.Fatalf("decoded %T does not encode: %v", c, err)
		}
		NewMeta().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b})
	})
}

func TestSetPlacement(t *testing.T) {
	m := NewMeta()
	apply := func(i uint64, c MetaCommand) *MetaResult {
		return m.Apply(metaLog(t, i, c)).(*MetaResult)
	}
	for i, id := range []string{"a", "b", "c", "d"} {
		apply(uint64(i+1), &UpsertNode{Node: NodeRecord{ID: id, ServerID: id + "@1"}})
	}
	apply(5, &CreateChannel{Channel: ChannelRecord{Name: "x", Replicas: 3, Placement: []Replica{
		{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "c", ServerID: "c@1"}}}})
	// c is replaced by d: a and b keep their Added 0, d gets the index.
	next := []Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "d", ServerID: "d@1"}}
	if r := apply(6, &SetPlacement{Channel: "x", Placement: next, Expect: 5}); r.Err != nil {
		t.Fatal(r.Err)
	}
	ch, _ := m.Channel("x")
	if ch.ModifyIndex != 6 || ch.Replicas != 3 || ch.Placement[0].Added != 0 || ch.Placement[2].Added != 6 || ch.HasNode("c") {
		t.Fatalf("after replace: %+v", ch)
	}
	// A decision from an older read, a duplicate node, an unknown node, a
	// node's stale incarnation and an empty placement change nothing.
	for i, c := range []*SetPlacement{
		{Channel: "x", Placement: next[:2], Expect: 5},
		{Channel: "x", Placement: []Replica{next[0], next[0]}, Expect: 6},
		{Channel: "x", Placement: []Replica{next[0], {NodeID: "zz", ServerID: "zz@1"}}, Expect: 6},
		{Channel: "x", Placement: []Replica{next[0], {NodeID: "c", ServerID: "c@0"}}, Expect: 6},
		{Channel: "x", Expect: 6},
	} {
		r := apply(uint64(7+i), c)
		if !errors.Is(r.Err, ErrPlacementChanged) && !errors.Is(r.Err, ErrInvalidPlacement) {
			t.Fatalf("case %d applied: %v", i, r.Err)
		}
	}
	if ch2, _ := m.Channel("x"); ch2.ModifyIndex != 6 || len(ch2.Placement) != 3 {
		t.Fatalf("a refused placement changed the channel: %+v", ch2)
	}
	if r := apply(20, &SetPlacement{Channel: "y", Placement: next, Expect: 0}); !errors.Is(r.Err, ErrChannelNotFound) {
		t.Fatalf("unknown channel: %v", r.Err)
	}
	// Scaling to five.
	five := append(slices.Clone(next), Replica{NodeID: "c", ServerID: "c@1"})
	if r := apply(21, &SetPlacement{Channel: "x", Placement: five, Expect: 6}); r.Err != nil {
		t.Fatal(r.Err)
	}
	ch, _ = m.Channel("x")
	if ch.Replicas != 4 || ch.Placement[3].Added != 21 {
		t.Fatalf("after scale: %+v", ch)
	}
	// The creation placement stays what it was: it is what a creation
	// replica that starts late bootstraps with.
	want := []Replica{{NodeID: "a", ServerID: "a@1"}, {NodeID: "b", ServerID: "b@1"}, {NodeID: "c", ServerID: "c@1"}}
	if !slices.Equal(ch.CreationPlacement(), want) {
		t.Fatalf("creation placement %+v, want %+v", ch.CreationPlacement(), want)
	}
	// A channel's quota changes, and with it the channel's modify index.
	if r := apply(22, &SetChannelQuota{Channel: "x", QuotaBytes: 1 << 20}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if ch, _ := m.Channel("x"); ch.QuotaBytes != 1<<20 || ch.ModifyIndex != 22 {
		t.Fatalf("after quota: %+v", ch)
	}
	if r := apply(23, &SetChannelQuota{Channel: "y", QuotaBytes: 1}); !errors.Is(r.Err, ErrChannelNotFound) {
		t.Fatalf("quota of an unknown channel: %v", r.Err)
	}
}
