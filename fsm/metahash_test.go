package fsm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// TestMetaHashCheck: replicas of the meta group that applied the same log
// hash alike at each check and report it; one whose state was changed
// outside the log hashes differently at the next check; a restore forgets
// the hashes of the replaced state.
func TestMetaHashCheck(t *testing.T) {
	metas := []*Meta{NewMeta(), NewMeta()}
	reported := make([]map[uint64]uint64, 2)
	for i, m := range metas {
		reported[i] = map[uint64]uint64{}
		m.SetOnHash(func(index, hash uint64) { reported[i][index] = hash })
	}
	cmds := []MetaCommand{
		&SetClusterID{ID: "c"},
		&UpsertNode{Node: NodeRecord{ID: "a", Role: RoleCore, ServerID: "a@1", Zone: "z1"}},
		&MetaHashCheck{},
		&CreateChannel{Channel: ChannelRecord{Name: "x", Replicas: 1, Placement: []Replica{{NodeID: "a", ServerID: "a@1"}}}},
		&MetaHashCheck{},
	}
	for i, c := range cmds {
		for _, m := range metas {
			m.Apply(metaLog(t, uint64(i+1), c))
		}
	}
	ctx := context.Background()
	for _, index := range []uint64{3, 5} {
		h0, err0 := metas[0].HashAt(ctx, index)
		h1, err1 := metas[1].HashAt(ctx, index)
		if err0 != nil || err1 != nil || h0 != h1 || reported[0][index] != h0 || reported[1][index] != h1 {
			t.Fatalf("check at %d: %x/%v and %x/%v, reported %x and %x", index, h0, err0, h1, err1, reported[0][index], reported[1][index])
		}
	}
	if h3, _ := metas[0].HashAt(ctx, 3); h3 == reported[0][5] {
		t.Fatal("a create changed nothing in the hash")
	}
	if _, err := metas[0].HashAt(ctx, 4); !errors.Is(err, ErrHashUnknown) {
		t.Fatalf("HashAt of an index without a check = %v", err)
	}

	if !metas[1].SetZoneForTest("a", "z2") {
		t.Fatal("no node a")
	}
	for _, m := range metas {
		m.Apply(metaLog(t, 6, &MetaHashCheck{}))
	}
	if h0, _ := metas[0].HashAt(ctx, 6); h0 == reported[1][6] {
		t.Fatal("a replica changed outside the log hashed like a sound one")
	}

	snap, err := metas[0].Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if err := metas[1].Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if _, err := metas[1].HashAt(ctx, 6); !errors.Is(err, ErrHashUnknown) {
		t.Fatalf("HashAt after a restore = %v, want ErrHashUnknown", err)
	}
}
