package fsm

import (
	"bytes"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Applies are not synced (the Raft log is the durable record), so a power
// loss may take any of them back. Two writes must survive it, each followed
// here by a simulated power loss (vfs.MemFS.CrashClone keeps only what was
// synced) and a reopen: the switch of a Restore (raft compacts its log
// behind an installed snapshot, so the restored state cannot be replayed),
// and every apply a persisted snapshot claims (Persist syncs before it
// streams; raft compacts its log behind the snapshot too).
func TestPowerLossKeepsRestoreAndPersistedSnapshot(t *testing.T) {
	fs := vfs.NewCrashableMem()
	if err := fs.MkdirAll("/state", 0o755); err != nil {
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
	s, err := OpenStore("/state", StoreOptions{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := openChannel(t, s, 1)
	afterPowerLoss := func(step string, wantApplied uint64, wantHash string) {
		t.Helper()
		crashed, err := OpenStore("/state", StoreOptions{FS: fs.CrashClone(vfs.CrashCloneCfg{})})
		if err != nil {
			t.Fatalf("%s: reopen after power loss: %v", step, err)
		}
		defer crashed.Close()
		cc := openChannel(t, crashed, 1)
		defer cc.Close()
		if got := cc.Applied(); got != wantApplied {
			t.Errorf("%s, then power loss: applied %d, want %d", step, got, wantApplied)
		}
		if wantHash != "" && stateHash(t, crashed, 1) != wantHash {
			t.Errorf("%s, then power loss: the state differs from the one restored", step)
		}
	}

	// Other state first, then a snapshot of another replica restored over it.
	applyInBatches(t, c, randomLog(t, 99, 300), 1, 32)
	sa, a := newChannel1(t)
	applyInBatches(t, a, randomLog(t, 7, 200), 2, 32)
	if err := c.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatal(err)
	}
	afterPowerLoss("Restore", a.Applied(), stateHash(t, sa, 1))

	// Unsynced applies after it, then a snapshot persisted.
	more := randomLog(t, 7, 400)[200:]
	applyInBatches(t, c, more, 3, 32)
	applied := c.Applied()
	if applied <= a.Applied() {
		t.Fatalf("applied %d after more entries, restored %d", applied, a.Applied())
	}
	snapshotBytes(t, c)
	afterPowerLoss("Persist", applied, "")
}
