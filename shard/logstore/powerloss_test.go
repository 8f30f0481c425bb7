package logstore

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// Every write of the store is on disk when it returns, power loss included:
// each step below is followed by a simulated power loss (the FS keeps only
// what was synced, vfs.MemFS.CrashClone) and a check of the reopened copy.
// Removing the Sync of StoreLogs, Set or DeleteRange fails it; the
// multi-node tests in package shard cannot see a DeleteRange or a stable
// store Set that is not synced while a synced append follows it in the
// same WAL (docs/testing.md).
func TestPowerLossKeepsWhatReturned(t *testing.T) {
	fs := vfs.NewCrashableMem()
	// The store's directory itself is its caller's to make durable (the
	// shard manager syncs it into its parent).
	if err := fs.MkdirAll("/raftlog", 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := fs.OpenDir("/")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sync(); err != nil {
		t.Fatal(err)
	}
	root.Close()
	db, err := Open("/raftlog", Options{FS: fs, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g, g2 := db.Group(1), db.Group(2)

	afterPowerLoss := func(step string, check func(g, g2 *Store, db *DB) error) {
		t.Helper()
		crashed, err := Open("/raftlog", Options{FS: fs.CrashClone(vfs.CrashCloneCfg{}), MemTableSize: 4 << 20})
		if err != nil {
			t.Fatalf("%s: reopen after power loss: %v", step, err)
		}
		defer crashed.Close()
		if err := check(crashed.Group(1), crashed.Group(2), crashed); err != nil {
			t.Errorf("%s, then power loss: %v", step, err)
		}
	}
	span := func(s *Store) (uint64, uint64) {
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		return first, last
	}

	mustStore(t, g, entries(1, 1, 20))
	mustStore(t, g2, entries(2, 1, 5))
	afterPowerLoss("StoreLogs 1-20", func(g, _ *Store, _ *DB) error {
		var l raft.Log
		if first, last := span(g); first != 1 || last != 20 {
			return fmt.Errorf("log %d-%d, want 1-20", first, last)
		}
		if err := g.GetLog(20, &l); err != nil || string(l.Data) != "g1-i20" {
			return fmt.Errorf("entry 20: %v %q", err, l.Data)
		}
		return nil
	})

	if err := g.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := g.Set([]byte("LastVoteCand"), []byte("n2@1")); err != nil {
		t.Fatal(err)
	}
	afterPowerLoss("SetUint64 and Set", func(g, _ *Store, _ *DB) error {
		term, _ := g.GetUint64([]byte("CurrentTerm"))
		cand, _ := g.Get([]byte("LastVoteCand"))
		if term != 7 || string(cand) != "n2@1" {
			return fmt.Errorf("term %d, vote %q; want 7, n2@1", term, cand)
		}
		return nil
	})

	// A conflict: raft truncates the suffix, then (not here) appends.
	if err := g.DeleteRange(16, 20); err != nil {
		t.Fatal(err)
	}
	afterPowerLoss("DeleteRange 16-20 (suffix)", func(g, _ *Store, _ *DB) error {
		if first, last := span(g); first != 1 || last != 15 {
			return fmt.Errorf("log %d-%d, want 1-15", first, last)
		}
		return nil
	})
	// Compaction behind a snapshot.
	if err := g.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	afterPowerLoss("DeleteRange 1-10 (prefix)", func(g, _ *Store, _ *DB) error {
		if first, last := span(g); first != 11 || last != 15 {
			return fmt.Errorf("log %d-%d, want 11-15", first, last)
		}
		return nil
	})

	if err := db.DeleteGroup(2); err != nil {
		t.Fatal(err)
	}
	afterPowerLoss("DeleteGroup 2", func(_, g2 *Store, db *DB) error {
		groups, err := db.Groups()
		if err != nil || len(groups) != 1 || groups[0] != 1 {
			return fmt.Errorf("groups %v (%v), want [1]", groups, err)
		}
		if _, last := span(g2); last != 0 {
			return fmt.Errorf("group 2 still has entries up to %d", last)
		}
		return nil
	})
}
