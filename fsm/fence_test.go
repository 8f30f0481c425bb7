package fsm

import (
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// TestFenceServers: fenced ids accumulate once each, sorted, survive a
// snapshot, and IsFenced answers from them.
func TestFenceServers(t *testing.T) {
	m := NewMeta()
	apply := func(idx uint64, c MetaCommand) {
		b, err := EncodeMeta(c)
		if err != nil {
			t.Fatal(err)
		}
		m.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b})
	}
	apply(1, &FenceServers{IDs: []string{"n3@c", "n2@b"}})
	apply(2, &FenceServers{IDs: []string{"n2@b", ""}})
	if got := m.Fenced(); !slices.Equal(got, []string{"n2@b", "n3@c"}) {
		t.Fatalf("fenced %v", got)
	}
	if !m.IsFenced("n2@b") || m.IsFenced("n2@d") || m.IsFenced("n1@a") {
		t.Fatal("IsFenced wrong")
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	r := NewMeta()
	if err := r.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if !r.IsFenced("n3@c") || !slices.Equal(r.Fenced(), m.Fenced()) {
		t.Fatalf("after restore: %v", r.Fenced())
	}
}
