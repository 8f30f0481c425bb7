package logstore

import (
	"errors"
	"testing"
	"time"
)

// A store on a SlowFS pays the sync delay on every synced append, and
// nothing once the delay is back to 0.
func TestSlowFSDelaysSyncedAppends(t *testing.T) {
	const delay = 250 * time.Millisecond
	fs := NewSlowFS()
	db, err := Open(t.TempDir(), Options{MemTableSize: 4 << 20, FS: fs})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	s := db.Group(1)
	timed := func(first, last uint64) time.Duration {
		t.Helper()
		start := time.Now()
		mustStore(t, s, entries(1, first, last))
		return time.Since(start)
	}

	if got := timed(1, 10); got >= delay {
		t.Errorf("StoreLogs without delay took %v, want well under %v", got, delay)
	}
	fs.SetSyncDelay(delay)
	if fs.SyncDelay() != delay {
		t.Fatalf("SyncDelay = %v, want %v", fs.SyncDelay(), delay)
	}
	if got := timed(11, 20); got < delay {
		t.Errorf("StoreLogs with a %v sync delay took %v, want at least the delay", delay, got)
	}
	fs.SetSyncDelay(0)
	if got := timed(21, 30); got >= delay {
		t.Errorf("StoreLogs after removing the delay took %v, want well under %v", got, delay)
	}
	checkLogs(t, s, entries(1, 1, 30))

	fs.SetSyncDelay(-time.Second)
	if fs.SyncDelay() != 0 {
		t.Errorf("a negative delay is stored as %v, want 0", fs.SyncDelay())
	}
}
