package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestCommandVersions(t *testing.T) {
	for _, c := range []struct {
		cmd  Command
		want int
	}{
		{&Put{Key: []byte("k")}, 1},
		{&Delete{Key: []byte("k")}, 1},
		{&Txn{}, 1},
		{&HashCheck{}, 2},
	} {
		b, err := Encode(c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if got := EntryVersion(b); got != c.want {
			t.Errorf("EntryVersion(%T) = %d, want %d", c.cmd, got, c.want)
		}
		if c.want > Version {
			t.Errorf("%T needs version %d, above this binary's %d", c.cmd, c.want, Version)
		}
	}
	if got := EntryVersion([]byte{0x3f}); got <= Version {
		t.Errorf("an unknown type has version %d; it must be above %d so that it is never proposed", got, Version)
	}
	for _, c := range []struct {
		cmd  MetaCommand
		want int
	}{
		{&SetClusterID{}, 1}, {&UpsertNode{}, 1}, {&SetNodeState{}, 1}, {&RemoveNode{}, 1},
		{&CreateChannel{}, 1}, {&DeleteChannel{}, 1}, {&MetaHashCheck{}, 2}, {&SetClusterVersion{}, 2},
		{&IssueToken{}, 3}, {&RevokeToken{}, 3}, {&SetChannelSettings{}, 3},
		{&SetPlacement{}, 4}, {&SetChannelQuota{}, 4}, {&CreateRestoredChannel{}, 4}, {&RecoverChannel{}, 4}, {&FenceServers{}, 4},
		{&SetChannelChunkSize{}, 5},
		{&CreateChannel{Channel: ChannelRecord{ChunkSize: 1 << 20}}, 5},
		{&CreateRestoredChannel{Channel: ChannelRecord{ChunkSize: 1 << 20}}, 5},
	} {
		if got := MetaVersion(c.cmd); got != c.want {
			t.Errorf("MetaVersion(%T) = %d, want %d", c.cmd, got, c.want)
		}
	}
	if err := CheckVersion(2, 1); !errors.Is(err, ErrUpgradePending) ||
		err.Error() != "command needs cluster version 2, the cluster runs 1: finish upgrading every node" {
		t.Fatalf("CheckVersion(2, 1) = %v", err)
	}
	if err := CheckVersion(2, 2); err != nil {
		t.Fatalf("CheckVersion(2, 2) = %v", err)
	}
}

// The cluster version starts at 1, only goes up, survives a snapshot and
// restore, and SetClusterVersion writes the nodes' versions it names.
func TestClusterVersion(t *testing.T) {
	m := NewMeta()
	apply := func(i uint64, c MetaCommand) {
		if r := m.Apply(metaLog(t, i, c)).(*MetaResult); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if v := m.ClusterVersion(); v != 1 {
		t.Fatalf("empty state: cluster version %d, want 1", v)
	}
	apply(1, &UpsertNode{Node: NodeRecord{ID: "a"}})
	apply(2, &UpsertNode{Node: NodeRecord{ID: "b", Version: 2}})
	if a, _ := m.Node("a"); a.SupportedVersion() != 1 {
		t.Fatalf("a node that reports no version supports %d, want 1", a.SupportedVersion())
	}
	apply(3, &SetClusterVersion{Version: 2, Nodes: map[string]int{"a": 2, "b": 2, "gone": 2}})
	if v := m.ClusterVersion(); v != 2 {
		t.Fatalf("cluster version %d, want 2", v)
	}
	// Written whether they changed or not: a replica whose older binary
	// dropped b's version must end up with the same record as the others.
	for _, id := range []string{"a", "b"} {
		if n, _ := m.Node(id); n.Version != 2 || n.ModifyIndex != 3 {
			t.Fatalf("node %s = %+v, want version 2 modified at 3", id, n)
		}
	}
	if _, ok := m.Node("gone"); ok {
		t.Fatal("SetClusterVersion created a node")
	}
	apply(4, &SetClusterVersion{Version: 1})
	if v := m.ClusterVersion(); v != 2 {
		t.Fatalf("cluster version went down to %d", v)
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bufSink
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	m2 := NewMeta()
	if err := m2.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if v := m2.ClusterVersion(); v != 2 {
		t.Fatalf("restored cluster version %d, want 2", v)
	}
}

// A snapshot written before versions existed (no cluster_version, no node
// version) restores as version 1.
func TestClusterVersionOldSnapshot(t *testing.T) {
	old := `{"version":1,"applied":7,"cluster_id":"c","next_group_id":1,` +
		`"nodes":{"a":{"id":"a","server_id":"a@1","role":"core","cluster_addr":"x","http_addr":"y","gossip_addr":"z","state":"alive","create_index":2,"modify_index":2}},"channels":{}}`
	m := NewMeta()
	if err := m.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	a, ok := m.Node("a")
	if !ok || a.SupportedVersion() != 1 || m.ClusterVersion() != 1 {
		t.Fatalf("node a = %+v, cluster version %d; want both version 1", a, m.ClusterVersion())
	}
}

// A committed entry this binary cannot decode stops the node, meta and
// channel alike, with a message naming the type and the upgrade; a
// skippable one (the hash checks' kind) is a no-op.
func TestUnknownCommittedEntryStops(t *testing.T) {
	m := NewMeta()
	mustPanic(t, "type 0x4f", func() { m.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{0x4f, '{', '}'}}) })
	if r := m.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{0xcf, '{', '}'}}).(*MetaResult); r.Err != nil || m.Applied() != 2 {
		t.Fatalf("skippable meta entry: %+v, applied %d", r, m.Applied())
	}
	_, c := newChannel1(t)
	mustPanic(t, "type 0x3f", func() { c.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{0x3f}}}) })
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		s, _ := r.(string)
		if !strings.Contains(s, want) || !strings.Contains(s, `docs/operations.md "Upgrades"`) {
			t.Fatalf("panic %v; want one naming %q and the upgrade procedure", r, want)
		}
	}()
	f()
}
