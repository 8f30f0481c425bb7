package shard

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

var testConf = raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "a@1", Address: "127.0.0.1:1"}}}

func writeSnap(t *testing.T, s raft.SnapshotStore, index, term uint64, data []byte) string {
	t.Helper()
	_, trans := raft.NewInmemTransport("") // FileSnapshotStore encodes legacy peers with it
	sink, err := s.Create(1, index, term, testConf, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

func readSnap(t *testing.T, s raft.SnapshotStore, id string) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return meta, b
}

// The store keeps raft.FileSnapshotStore's layout: each reads the other's
// snapshots, so existing nodes' replica dirs need no migration.
func TestSnapStoreReadsAndWritesFileSnapshotStoreLayout(t *testing.T) {
	dir := t.TempDir()
	fss, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	old := writeSnap(t, fss, 10, 2, []byte("written by FileSnapshotStore"))
	s, err := newSnapStore(vfs.Default, dir, 1, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != old || list[0].Index != 10 || list[0].Term != 2 {
		t.Fatalf("List = %v, %v; want the FileSnapshotStore snapshot %s", list, err, old)
	}
	meta, b := readSnap(t, s, old)
	if string(b) != "written by FileSnapshotStore" || len(meta.Configuration.Servers) != 1 {
		t.Fatalf("read %q, meta %+v", b, meta)
	}

	data := bytes.Repeat([]byte("x"), 200<<10)
	id := writeSnap(t, s, 20, 3, data)
	// retain 1: the older one is reaped.
	if _, err := os.Stat(filepath.Join(dir, "snapshots", old)); !os.IsNotExist(err) {
		t.Fatalf("old snapshot not reaped: %v", err)
	}
	list, err = fss.List()
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("FileSnapshotStore.List = %v, %v; want %s", list, err, id)
	}
	if _, rc, err := fss.Open(id); err != nil {
		t.Fatalf("FileSnapshotStore cannot open ours: %v", err)
	} else {
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) {
			t.Fatal("FileSnapshotStore read different bytes")
		}
	}
}

// Temporary dirs are never listed (and are removed when the store opens), a
// cancelled snapshot leaves nothing, and a damaged state file is refused.
func TestSnapStoreSkipsUnfinishedAndRefusesDamaged(t *testing.T) {
	fs := vfs.NewMem()
	s, err := newSnapStore(fs, "/r", 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	id := writeSnap(t, s, 5, 1, []byte("good"))
	sink, err := s.Create(1, 9, 1, testConf, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("unfinished")); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(); len(list) != 1 || list[0].ID != id {
		t.Fatalf("List with a snapshot in progress = %v", list)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	if names, _ := fs.List("/r/snapshots"); len(names) != 1 {
		t.Fatalf("after Cancel: %v", names)
	}
	// A crash in the middle of a snapshot: its temporary dir is removed.
	if err := fs.MkdirAll("/r/snapshots/1-9-1.tmp", 0o755); err != nil {
		t.Fatal(err)
	}
	if s, err = newSnapStore(fs, "/r", 2, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	if names, _ := fs.List("/r/snapshots"); len(names) != 1 || names[0] != id {
		t.Fatalf("after reopen: %v", names)
	}
	f, err := fs.Create("/r/snapshots/"+id+"/state.bin", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("bad!")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, _, err := s.Open(id); err == nil {
		t.Fatal("a damaged snapshot opened")
	}
	if _, _, err := s.Open("../x"); err == nil {
		t.Fatal("a path as a snapshot id opened")
	}
}

// A power loss right after Close keeps the whole snapshot: its files, its
// directory and the directories above it were synced. Run with each sync
// removed, this test fails (docs/testing.md).
func TestSnapStoreSurvivesPowerLoss(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := newSnapStore(fs, "/data/replicas/7", 1, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		data := bytes.Repeat([]byte{byte(i)}, 100<<10)
		id := writeSnap(t, s, uint64(10*(i+1)), 1, data)
		crashed := fs.CrashClone(vfs.CrashCloneCfg{})
		s2, err := newSnapStore(crashed, "/data/replicas/7", 1, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		list, err := s2.List()
		if err != nil || len(list) != 1 || list[0].ID != id {
			t.Fatalf("snapshot %d after a power loss: List = %v, %v; want %s", i, list, err, id)
		}
		if _, got := readSnap(t, s2, id); !bytes.Equal(got, data) {
			t.Fatalf("snapshot %d after a power loss: %d bytes, want %d", i, len(got), len(data))
		}
	}
}
