package logstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// openTest opens a store in dir (a fresh temp dir when empty) with a small
// memtable, closed at the end of the test.
func openTest(t testing.TB, dir string) *DB {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	db, err := Open(dir, Options{MemTableSize: 4 << 20})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// entries returns logs first..last with data naming the group and index.
func entries(gid, first, last uint64) []*raft.Log {
	var logs []*raft.Log
	for i := first; ; i++ {
		logs = append(logs, &raft.Log{
			Index: i, Term: i/10 + 1, Type: raft.LogCommand,
			Data:       fmt.Appendf(nil, "g%d-i%d", gid, i),
			AppendedAt: time.Unix(0, int64(i)),
		})
		if i == last {
			return logs
		}
	}
}

func mustStore(t testing.TB, s *Store, logs []*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(logs); err != nil {
		t.Fatalf("StoreLogs: %v", err)
	}
}

// checkBounds asserts FirstIndex and LastIndex.
func checkBounds(t testing.TB, s *Store, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatalf("group %d FirstIndex: %v", s.gid, err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatalf("group %d LastIndex: %v", s.gid, err)
	}
	if f != first || l != last {
		t.Fatalf("group %d: First/LastIndex = %d/%d, want %d/%d", s.gid, f, l, first, last)
	}
}

// checkLogs asserts that every entry of want is stored as written.
func checkLogs(t testing.TB, s *Store, want []*raft.Log) {
	t.Helper()
	for _, w := range want {
		var got raft.Log
		if err := s.GetLog(w.Index, &got); err != nil {
			t.Fatalf("group %d GetLog(%d): %v", s.gid, w.Index, err)
		}
		if !sameLog(&got, w) {
			t.Fatalf("group %d GetLog(%d) = %+v, want %+v", s.gid, w.Index, got, *w)
		}
	}
}

// checkMissing asserts that the indexes are gone, with the exact sentinel.
func checkMissing(t testing.TB, s *Store, indexes ...uint64) {
	t.Helper()
	for _, i := range indexes {
		var l raft.Log
		if err := s.GetLog(i, &l); err != raft.ErrLogNotFound { // identity, not errors.Is
			t.Fatalf("group %d GetLog(%d) = %v, want raft.ErrLogNotFound itself", s.gid, i, err)
		}
	}
}

func TestLogStoreContract(t *testing.T) {
	s := openTest(t, "").Group(7)

	checkBounds(t, s, 0, 0)
	checkMissing(t, s, 0, 1, ^uint64(0))

	all := entries(7, 1, 10)
	mustStore(t, s, all)
	checkBounds(t, s, 1, 10)
	checkLogs(t, s, all)
	checkMissing(t, s, 0, 11)

	// Prefix compaction after a snapshot: inclusive at both ends.
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 10)
	checkMissing(t, s, 1, 2, 3)
	checkLogs(t, s, all[3:])

	// Suffix truncation on a conflict, then the new suffix with a new term.
	if err := s.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 7)
	checkMissing(t, s, 8, 9, 10)
	replaced := &raft.Log{Index: 8, Term: 9, Type: raft.LogCommand, Data: []byte("new")}
	if err := s.StoreLog(replaced); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 8)
	checkLogs(t, s, []*raft.Log{replaced})

	// Overwriting an index in place (no DeleteRange first) keeps the latest.
	rewritten := &raft.Log{Index: 8, Term: 10, Type: raft.LogNoop}
	mustStore(t, s, []*raft.Log{rewritten})
	checkLogs(t, s, []*raft.Log{rewritten})

	// A single index; the gap it leaves is fine for a non-monotonic store.
	if err := s.DeleteRange(5, 5); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 8)
	checkMissing(t, s, 5)

	// min > max deletes nothing.
	if err := s.DeleteRange(8, 4); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 8)

	// Non-contiguous append after a gap (as after a user Restore).
	far := entries(7, 100, 102)
	mustStore(t, s, far)
	checkBounds(t, s, 4, 102)
	checkMissing(t, s, 50)

	// Full wipe, as RecoverCluster and removeOldLogs do.
	if err := s.DeleteRange(0, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 0, 0)
	checkMissing(t, s, 4, 100)

	// Empty StoreLogs is a no-op.
	if err := s.StoreLogs(nil); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 0, 0)

	// Extreme indexes.
	edge := []*raft.Log{{Index: 0, Term: 1}, {Index: ^uint64(0), Term: 2}}
	mustStore(t, s, edge)
	checkBounds(t, s, 0, ^uint64(0))
	checkLogs(t, s, edge)
}

func TestStableStore(t *testing.T) {
	s := openTest(t, "").Group(3)

	if v, err := s.Get([]byte("CurrentTerm")); v != nil || err != nil {
		t.Fatalf("Get(missing) = %q, %v; want nil, nil", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 0 || err != nil {
		t.Fatalf("GetUint64(missing) = %d, %v; want 0, nil", v, err)
	}

	tests := []struct {
		key, val string
	}{
		{"LastVoteCand", "127.0.0.1:7000"},
		{"", "empty key"},
		{"bin\x00key", "\x00\xff"},
		{"empty value", ""},
	}
	for _, tt := range tests {
		if err := s.Set([]byte(tt.key), []byte(tt.val)); err != nil {
			t.Fatalf("Set(%q): %v", tt.key, err)
		}
	}
	for _, tt := range tests {
		v, err := s.Get([]byte(tt.key))
		if err != nil || v == nil || string(v) != tt.val {
			t.Errorf("Get(%q) = %q (nil: %t), %v; want %q", tt.key, v, v == nil, err, tt.val)
		}
	}

	for _, want := range []uint64{1, 0, 1 << 33, ^uint64(0)} {
		if err := s.SetUint64([]byte("CurrentTerm"), want); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetUint64([]byte("CurrentTerm")); got != want || err != nil {
			t.Fatalf("GetUint64 = %d, %v; want %d", got, err, want)
		}
	}

	// Overwrite, and a value that is not 8 bytes is reported, not misread.
	if err := s.Set([]byte("LastVoteCand"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "b" {
		t.Fatalf("Get after overwrite = %q", v)
	}
	if _, err := s.GetUint64([]byte("LastVoteCand")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 1-byte value = %v, want ErrCorrupt", err)
	}

	// The returned slice is a copy.
	v, _ := s.Get([]byte("bin\x00key"))
	v[0] = 'X'
	if again, _ := s.Get([]byte("bin\x00key")); again[0] != 0 {
		t.Fatal("Get returned a slice aliasing the store")
	}
}

// isolationGIDs are neighbours in byte order, including both ends.
var isolationGIDs = []uint64{0, 1, 2, 255, 256, 1 << 32, 1<<63 - 1, 1 << 63, ^uint64(0) - 1, ^uint64(0)}

// fillGroup gives group gid a log range and stable values unique to it.
func fillGroup(t testing.TB, db *DB, k int, gid uint64) []*raft.Log {
	t.Helper()
	s := db.Group(gid)
	first := uint64(k*10 + 1)
	logs := entries(gid, first, first+4)
	mustStore(t, s, logs)
	if err := s.SetUint64([]byte("CurrentTerm"), gid); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), fmt.Appendf(nil, "n%d", gid)); err != nil {
		t.Fatal(err)
	}
	return logs
}

func checkGroup(t testing.TB, db *DB, gid uint64, logs []*raft.Log) {
	t.Helper()
	s := db.Group(gid)
	checkBounds(t, s, logs[0].Index, logs[len(logs)-1].Index)
	checkLogs(t, s, logs)
	checkMissing(t, s, logs[0].Index-1, logs[len(logs)-1].Index+1)
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != gid || err != nil {
		t.Fatalf("group %d CurrentTerm = %d, %v", gid, v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); string(v) != fmt.Sprintf("n%d", gid) || err != nil {
		t.Fatalf("group %d LastVoteCand = %q, %v", gid, v, err)
	}
}

func checkEmptyGroup(t testing.TB, db *DB, gid uint64) {
	t.Helper()
	s := db.Group(gid)
	checkBounds(t, s, 0, 0)
	if v, err := s.Get([]byte("LastVoteCand")); v != nil || err != nil {
		t.Fatalf("group %d LastVoteCand = %q, %v; want nothing", gid, v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 0 || err != nil {
		t.Fatalf("group %d CurrentTerm = %d, %v; want 0", gid, v, err)
	}
}

func checkGroups(t testing.TB, db *DB, want []uint64) {
	t.Helper()
	got, err := db.Groups()
	if err != nil {
		t.Fatalf("Groups: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Groups() = %v, want %v", got, want)
	}
}

func TestGroupIsolation(t *testing.T) {
	db := openTest(t, "")
	checkGroups(t, db, nil)

	logs := map[uint64][]*raft.Log{}
	for k, gid := range isolationGIDs {
		logs[gid] = fillGroup(t, db, k, gid)
	}
	for _, gid := range isolationGIDs {
		checkGroup(t, db, gid, logs[gid])
	}
	checkGroups(t, db, isolationGIDs)

	// Whole-range deletes of one group leave its neighbours alone.
	for _, gid := range []uint64{1, ^uint64(0) - 1} {
		if err := db.Group(gid).DeleteRange(0, ^uint64(0)); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, db.Group(gid), 0, 0)
		logs[gid] = fillGroup(t, db, 0, gid) // refill for the checks below
	}
	for _, gid := range isolationGIDs {
		checkGroup(t, db, gid, logs[gid])
	}

	// DeleteGroup removes logs and stable values of exactly one group.
	deleted := []uint64{0, 256, ^uint64(0)}
	for _, gid := range deleted {
		if err := db.DeleteGroup(gid); err != nil {
			t.Fatalf("DeleteGroup(%d): %v", gid, err)
		}
	}
	var remaining []uint64
	for _, gid := range isolationGIDs {
		if slices.Contains(deleted, gid) {
			checkEmptyGroup(t, db, gid)
			continue
		}
		checkGroup(t, db, gid, logs[gid])
		remaining = append(remaining, gid)
	}
	checkGroups(t, db, remaining)

	// Deleting a group that has nothing is fine.
	if err := db.DeleteGroup(12345); err != nil {
		t.Fatal(err)
	}
	checkGroups(t, db, remaining)
}

func TestGroupsListsStableOnlyAndLogOnly(t *testing.T) {
	db := openTest(t, "")
	if err := db.Group(5).SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
	mustStore(t, db.Group(9), entries(9, 1, 1))
	if err := db.Group(^uint64(0)).Set(nil, []byte("v")); err != nil { // shortest stable key
		t.Fatal(err)
	}
	checkGroups(t, db, []uint64{5, 9, ^uint64(0)})

	// A group whose log was compacted away but whose term remains is still
	// on disk: its replica must be restarted or cleaned up.
	if err := db.Group(5).DeleteRange(0, 100); err != nil {
		t.Fatal(err)
	}
	checkGroups(t, db, []uint64{5, 9, ^uint64(0)})
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	logs := map[uint64][]*raft.Log{}
	for k, gid := range isolationGIDs {
		logs[gid] = fillGroup(t, db, k, gid)
	}
	if err := db.Group(2).DeleteRange(21, 22); err != nil {
		t.Fatal(err)
	}
	logs[2] = logs[2][2:]
	if err := db.DeleteGroup(1 << 32); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen twice: once from the WAL, once after a flush to sstables.
	for round := range 2 {
		db = openTest(t, dir)
		for _, gid := range isolationGIDs {
			if gid == 1<<32 {
				checkEmptyGroup(t, db, gid)
				continue
			}
			checkGroup(t, db, gid, logs[gid])
		}
		if round == 0 {
			if err := db.pdb.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenChecksFormatVersion(t *testing.T) {
	rawSet := func(t *testing.T, dir string, key, val []byte) {
		t.Helper()
		pdb, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log: hclog.NewNullLogger()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pdb.Set(key, val, pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := pdb.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		wantErr error
	}{
		{"new directory", func(*testing.T, string) {}, nil},
		{"current version", func(t *testing.T, dir string) {
			db, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"newer version", func(t *testing.T, dir string) {
			rawSet(t, dir, versionKey, []byte{formatVersion + 1})
		}, ErrUnsupportedVersion},
		{"malformed version", func(t *testing.T, dir string) {
			rawSet(t, dir, versionKey, []byte{formatVersion, 0})
		}, ErrUnsupportedVersion},
		{"foreign data", func(t *testing.T, dir string) {
			rawSet(t, dir, []byte("some-other-db"), []byte("x"))
		}, ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			db, err := Open(dir, Options{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			} else if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name the directory", err)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	db := openTest(t, "")
	s := db.Group(1)
	mustStore(t, s, entries(1, 1, 1))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	ops := map[string]error{
		"Close":      db.Close(),
		"StoreLogs":  s.StoreLogs(entries(1, 2, 2)),
		"GetLog":     s.GetLog(1, &l),
		"DeleteRng":  s.DeleteRange(1, 1),
		"Set":        s.Set([]byte("k"), nil),
		"DeleteGrp":  db.DeleteGroup(1),
		"FirstIndex": func() error { _, err := s.FirstIndex(); return err }(),
		"LastIndex":  func() error { _, err := s.LastIndex(); return err }(),
		"Get":        func() error { _, err := s.Get([]byte("k")); return err }(),
		"GetUint64":  func() error { _, err := s.GetUint64([]byte("k")); return err }(),
		"Groups":     func() error { _, err := db.Groups(); return err }(),
	}
	for name, err := range ops {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestConcurrentGroups(t *testing.T) {
	db := openTest(t, "")
	const groups, batches, perBatch = 32, 30, 4
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for g := range uint64(groups) {
		wg.Go(func() {
			s := db.Group(g)
			for b := range uint64(batches) {
				first := b*perBatch + 1
				if err := s.StoreLogs(entries(g, first, first+perBatch-1)); err != nil {
					errs <- err
					return
				}
				// Read back while the other groups write.
				if last, err := s.LastIndex(); err != nil || last != first+perBatch-1 {
					errs <- fmt.Errorf("group %d: LastIndex = %d, %v; want %d", g, last, err, first+perBatch-1)
					return
				}
				if err := s.SetUint64([]byte("CurrentTerm"), b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []uint64
	for g := range uint64(groups) {
		s := db.Group(g)
		checkBounds(t, s, 1, batches*perBatch)
		checkLogs(t, s, entries(g, 1, batches*perBatch))
		if v, err := s.GetUint64([]byte("CurrentTerm")); v != batches-1 || err != nil {
			t.Fatalf("group %d CurrentTerm = %d, %v", g, v, err)
		}
		want = append(want, g)
	}
	checkGroups(t, db, want)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	db, err := Open(dir, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	s := db.Group(1)
	mustStore(t, s, entries(1, 1, 3))
	if err := s.StoreLog(entries(1, 4, 4)[0]); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		want float64
	}{
		{"shardnet_logstore_appends_total", 4},
		{"shardnet_logstore_append_batches_total", 2},
		{"shardnet_logstore_append_duration_seconds", 2}, // sample count
		{"shardnet_logstore_write_stalls_total", 0},
	} {
		if got := gathered(t, reg, tt.name); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}

	// One registry per node: a second store on it is refused...
	if _, err := Open(t.TempDir(), Options{Registerer: reg}); err == nil {
		t.Error("second Open on the same registry succeeded")
	}
	// ...but closing and reopening works.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, Options{Registerer: reg})
	if err != nil {
		t.Fatalf("reopen on the same registry: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLoneAppendsEachWaitForASync: an append that no other group's append
// shares a sync with has a WAL fsync of its own before StoreLogs returns
// (acknowledged means durable), and wal_syncs_total counts it. pebble
// counts a sync just after it wakes the appends it covered, so the
// counter may trail the last return for a moment.
func TestLoneAppendsEachWaitForASync(t *testing.T) {
	reg := prometheus.NewRegistry()
	db, err := Open(t.TempDir(), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := db.Group(1)
	const n = 5
	before := gathered(t, reg, "shardnet_logstore_wal_syncs_total")
	for _, l := range entries(1, 1, n) {
		if err := s.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a WAL sync per lone append", func() bool {
		return gathered(t, reg, "shardnet_logstore_wal_syncs_total")-before >= n
	})
}

// gathered returns the value of an unlabelled counter, or the sample count of
// a histogram, as the registry exports it.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%s has %d series, want 1 (no labels)", name, len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		if h := m.GetHistogram(); h != nil {
			return float64(h.GetSampleCount())
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}

// TestQuietLogging checks that pebble's routine chatter (open, WAL, flush,
// compaction) stays below Info, as a healthy node must log nothing at Info
// per second.
func TestQuietLogging(t *testing.T) {
	var buf syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	db, err := Open(t.TempDir(), Options{Logger: logger, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := db.Group(1)
	for i := range uint64(20) {
		mustStore(t, s, entries(1, i*10+1, i*10+10))
	}
	if err := db.pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); out != "" {
		t.Errorf("pebble logged at Info or above:\n%s", out)
	}

	// And at Trace the flush is visible, so operators can turn it on.
	buf.Reset()
	logger.SetLevel(hclog.Trace)
	db, err = Open(t.TempDir(), Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	mustStore(t, db.Group(1), entries(1, 1, 1))
	if err := db.pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "flush") || !strings.Contains(out, "pebble") {
		t.Errorf("no flush logged at Trace:\n%s", out)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// TestKeyOrder pins the property the layout depends on: byte order of keys
// is numeric order of (group, index).
func TestKeyOrder(t *testing.T) {
	pairs := [][2]uint64{{0, 0}, {0, 1}, {0, 255}, {0, 256}, {0, ^uint64(0)}, {1, 0}, {255, 7}, {256, 0}, {^uint64(0), 0}, {^uint64(0), ^uint64(0)}}
	for i := 1; i < len(pairs); i++ {
		a, b := logKey(pairs[i-1][0], pairs[i-1][1]), logKey(pairs[i][0], pairs[i][1])
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("logKey%v >= logKey%v", pairs[i-1], pairs[i])
		}
	}
	for _, gid := range isolationGIDs {
		lo, hi := groupStart(tagLog, gid), groupEnd(tagLog, gid)
		if k := logKey(gid, ^uint64(0)); bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
			t.Errorf("logKey(%d, max) outside the group's bounds", gid)
		}
		if gid != ^uint64(0) && !bytes.Equal(hi, logKey(gid+1, 0)[:groupPrefixLen]) {
			t.Errorf("groupEnd(%d) is not the next group's start", gid)
		}
	}
	if bytes.Compare(versionKey, groupStart(tagLog, 0)) >= 0 {
		t.Error("version key sorts inside the log range")
	}
	if got := binary.BigEndian.Uint64(logKey(3, 9)[groupPrefixLen:]); got != 9 {
		t.Errorf("index in key = %d", got)
	}
}

// LastFSMIndex skips the entries raft never hands a state machine (no-op
// and barrier), stays inside its group, and answers 0 once the entries at
// or below the index were compacted away.
func TestLastFSMIndex(t *testing.T) {
	db := openTest(t, "")
	s := db.Group(7)
	types := []raft.LogType{
		1: raft.LogCommand, 2: raft.LogNoop, 3: raft.LogCommand, 4: raft.LogBarrier,
		5: raft.LogConfiguration, 6: raft.LogNoop, 7: raft.LogBarrier, 8: raft.LogCommand,
	}
	var logs []*raft.Log
	for i := 1; i < len(types); i++ {
		logs = append(logs, &raft.Log{Index: uint64(i), Term: 1, Type: types[i], Data: []byte("x")})
	}
	mustStore(t, s, logs)
	// Neighbours with commands where group 7 has none.
	mustStore(t, db.Group(6), entries(6, 1, 20))
	mustStore(t, db.Group(8), entries(8, 1, 20))
	for _, c := range []struct{ max, want uint64 }{
		{0, 0}, {1, 1}, {2, 1}, {3, 3}, {4, 3}, {5, 5}, {6, 5}, {7, 5}, {8, 8}, {100, 8},
	} {
		got, err := s.LastFSMIndex(c.max)
		if err != nil || got != c.want {
			t.Errorf("LastFSMIndex(%d) = %d, %v; want %d", c.max, got, err, c.want)
		}
	}
	// Compacted behind a snapshot up to 5: nothing the state machine
	// lacks is left at or below 7.
	if err := s.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ max, want uint64 }{{4, 0}, {7, 0}, {8, 8}} {
		got, err := s.LastFSMIndex(c.max)
		if err != nil || got != c.want {
			t.Errorf("after compaction, LastFSMIndex(%d) = %d, %v; want %d", c.max, got, err, c.want)
		}
	}
	// An empty group.
	if got, err := db.Group(9).LastFSMIndex(50); err != nil || got != 0 {
		t.Errorf("empty group: LastFSMIndex = %d, %v", got, err)
	}
}
