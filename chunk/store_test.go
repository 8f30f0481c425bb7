package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func openStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t *testing.T, s *Store, data []byte) ID {
	t.Helper()
	id, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Put %d bytes: %v", len(data), err)
	}
	return id
}

func readAll(t *testing.T, s *Store, id ID) []byte {
	t.Helper()
	r, err := s.Get(id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	return b
}

// tmpFiles lists what is left in the store's temp directory.
func tmpFiles(t *testing.T, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), tmpDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func storedIDs(t *testing.T, s *Store) []ID {
	t.Helper()
	var ids []ID
	if err := s.Walk(func(id ID, _ int64) error { ids = append(ids, id); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestPutGet: chunks of every edge length round-trip, whole and by range,
// under the id Sum gives, and the store counts them.
func TestPutGet(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	var total int64
	lengths := []int{0, 1, BlockSize - 1, BlockSize, BlockSize + 1, 3*BlockSize + 7, DefaultMaxChunkSize}
	for i, n := range lengths {
		data := randBytes(uint64(200+i), n)
		id := mustPut(t, s, data)
		if id != Sum(data) {
			t.Fatalf("%d bytes: Put returned %s, Sum %s", n, id, Sum(data))
		}
		total += int64(n)
		if !s.Has(id) {
			t.Fatalf("%d bytes: Has = false after Put", n)
		}
		if got := readAll(t, s, id); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d differing bytes", n, len(got))
		}
		info, err := s.Stat(id)
		if err != nil || info.Size != int64(n) || info.ID != id {
			t.Fatalf("%d bytes: Stat = %+v, %v", n, info, err)
		}
		// Ranges across block edges, through ReadAt and Seek.
		r, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(n) || r.ID() != id {
			t.Fatalf("%d bytes: reader Size %d ID %s", n, r.Size(), r.ID())
		}
		for _, off := range []int{0, 1, BlockSize - 1, BlockSize, n - 1} {
			if off < 0 || off >= n {
				continue
			}
			end := min(n, off+BlockSize+2)
			buf := make([]byte, end-off)
			if _, err := r.ReadAt(buf, int64(off)); err != nil && err != io.EOF {
				t.Fatalf("%d bytes: ReadAt %d: %v", n, off, err)
			}
			if !bytes.Equal(buf, data[off:end]) {
				t.Fatalf("%d bytes: range [%d,%d) differs", n, off, end)
			}
			sec := io.NewSectionReader(r, int64(off), int64(end-off))
			if b, _ := io.ReadAll(sec); !bytes.Equal(b, data[off:end]) {
				t.Fatalf("%d bytes: section [%d,%d) differs", n, off, end)
			}
		}
		r.Close()
	}
	if s.Count() != int64(len(lengths)) || s.Bytes() != total {
		t.Fatalf("Count %d Bytes %d, want %d and %d", s.Count(), s.Bytes(), len(lengths), total)
	}
	if _, err := s.Get(Sum([]byte("never put"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a chunk never put: %v", err)
	}
	if _, err := s.Stat(Sum([]byte("never put"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of a chunk never put: %v", err)
	}
	if left := tmpFiles(t, s); len(left) > 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// TestPutDeduplicates: equal chunks are stored once, and counted once.
func TestPutDeduplicates(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), Options{Registerer: reg})
	data := randBytes(300, 2*BlockSize+1)
	a := mustPut(t, s, data)
	b := mustPut(t, s, data)
	if err := s.PutExpect(a, bytes.NewReader(data)); err != nil {
		t.Fatalf("PutExpect of a held chunk: %v", err)
	}
	if a != b || s.Count() != 1 || s.Bytes() != int64(len(data)) {
		t.Fatalf("ids %s %s, Count %d, Bytes %d", a, b, s.Count(), s.Bytes())
	}
	if ids := storedIDs(t, s); len(ids) != 1 {
		t.Fatalf("Walk found %d chunks", len(ids))
	}
	if got := testutil.ToFloat64(s.m.puts.WithLabelValues("duplicate")); got != 2 {
		t.Fatalf("duplicate puts metric %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.m.puts.WithLabelValues("stored")); got != 1 {
		t.Fatalf("stored puts metric %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.m.storedBytes); got != float64(len(data)) {
		t.Fatalf("stored bytes metric %v", got)
	}
}

// TestPutRefused: a Put that is refused (wrong expected id, too large, disk
// nearly full, reader failing midway) stores nothing, leaves no temp file
// and leaves the chunks already held intact.
func TestPutRefused(t *testing.T) {
	data := randBytes(400, 3*BlockSize+5)
	other := Sum([]byte("something else"))
	for _, tc := range []struct {
		name   string
		opts   Options
		put    func(s *Store) error
		want   error
		reason string
	}{
		{"mismatch", Options{}, func(s *Store) error { return s.PutExpect(other, bytes.NewReader(data)) }, ErrMismatch, "mismatch"},
		{"mismatch by one bit", Options{}, func(s *Store) error {
			d := append([]byte(nil), data...)
			d[len(d)-1] ^= 1
			return s.PutExpect(Sum(data), bytes.NewReader(d))
		}, ErrMismatch, "mismatch"},
		{"too large", Options{MaxChunkSize: int64(len(data)) - 1}, func(s *Store) error {
			_, err := s.Put(bytes.NewReader(data))
			return err
		}, ErrTooLarge, "too_large"},
		{"disk nearly full", Options{freeBytes: func(string) (uint64, error) { return 100 << 20, nil }}, func(s *Store) error {
			_, err := s.Put(bytes.NewReader(data))
			return err
		}, ErrDiskFull, "disk_full"},
		{"reader fails", Options{}, func(s *Store) error {
			_, err := s.Put(io.MultiReader(bytes.NewReader(data), errReader{}))
			return err
		}, errBroken, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tc.opts.Registerer = reg
			s := openStore(t, t.TempDir(), tc.opts)
			// What the store held before stays (put with room to spare).
			keep := []byte("kept")
			s.opts.freeBytes = freeBytes
			kept := mustPut(t, s, keep)
			if tc.opts.freeBytes != nil {
				s.opts.freeBytes = tc.opts.freeBytes
			}
			if err := tc.put(s); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if ids := storedIDs(t, s); len(ids) != 1 || ids[0] != kept {
				t.Fatalf("store holds %v, want only %s", ids, kept)
			}
			if s.Count() != 1 || s.Bytes() != int64(len(keep)) {
				t.Fatalf("Count %d Bytes %d", s.Count(), s.Bytes())
			}
			if left := tmpFiles(t, s); len(left) > 0 {
				t.Fatalf("temp files left: %v", left)
			}
			if err := s.Verify(kept); err != nil {
				t.Fatalf("kept chunk: %v", err)
			}
			if got := testutil.ToFloat64(s.m.putsRefused.WithLabelValues(tc.reason)); got != 1 {
				t.Fatalf("puts_refused_total{reason=%q} = %v", tc.reason, got)
			}
		})
	}
	t.Run("exactly the maximum", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{MaxChunkSize: int64(len(data))})
		mustPut(t, s, data)
	})
}

var errBroken = errors.New("broken upload")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

// TestPutENOSPC: a write that runs out of space is ErrDiskFull too.
func TestPutENOSPC(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	err := diskErr(&os.PathError{Op: "write", Path: "x", Err: errNoSpace()})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("diskErr(ENOSPC) = %v", err)
	}
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	_, werr := f.Write([]byte("x"))
	if !errors.Is(diskErr(werr), ErrDiskFull) {
		t.Fatalf("a write to /dev/full: %v is not ErrDiskFull", diskErr(werr))
	}
}

// TestOpen: reopening finds the chunks and their totals, removes temp files
// that interrupted Puts left, and refuses a store of an unknown format.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustPut(t, s, randBytes(500, BlockSize+3))
	b := mustPut(t, s, []byte("b"))
	s.Close()
	for _, name := range []string{"put-123", "put-456"} {
		if err := os.WriteFile(filepath.Join(dir, tmpDir, name), []byte("half a chunk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir, Options{})
	if left := tmpFiles(t, s); len(left) > 0 {
		t.Fatalf("temp files left after Open: %v", left)
	}
	if s.Count() != 2 || s.Bytes() != BlockSize+3+1 || !s.Has(a) || !s.Has(b) {
		t.Fatalf("reopened: Count %d Bytes %d", s.Count(), s.Bytes())
	}
	s.Close()

	if err := os.WriteFile(filepath.Join(dir, formatFile), []byte(`{"format":2,"block_size":65536}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("Open of format 2: %v", err)
	}
}

// TestWalk: every chunk once, in id order, with its size; an error from
// the callback stops the walk.
func TestWalk(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	want := map[ID]int64{}
	for i := 0; i < 50; i++ {
		data := randBytes(uint64(600+i), i*97)
		want[mustPut(t, s, data)] = int64(len(data))
	}
	// A stray file is skipped, not taken for a chunk.
	if err := os.WriteFile(filepath.Join(s.Dir(), "00", "stray"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var got []ID
	err := s.Walk(func(id ID, size int64) error {
		if want[id] != size {
			t.Errorf("%s: size %d, want %d", id, size, want[id])
		}
		got = append(got, id)
		return nil
	})
	if err != nil || len(got) != len(want) {
		t.Fatalf("Walk: %d ids, %v", len(got), err)
	}
	if !sort.SliceIsSorted(got, func(i, j int) bool { return bytes.Compare(got[i][:], got[j][:]) < 0 }) {
		t.Fatal("Walk is not in id order")
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Walk(func(ID, int64) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Walk after an error: %v, %d calls", err, n)
	}
}

// corrupt flips one byte of the stored chunk id at off.
func corrupt(t *testing.T, s *Store, id ID, off int64) {
	t.Helper()
	f, err := os.OpenFile(s.path(id), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestVerify: Verify passes a good chunk; a chunk with a flipped bit or cut
// short fails with ErrCorrupt, is removed, and a Put of the right bytes
// heals it.
func TestVerify(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), Options{Registerer: reg})
	data := randBytes(700, 5*BlockSize+11)
	id := mustPut(t, s, data)
	if err := s.Verify(id); err != nil {
		t.Fatalf("Verify of a good chunk: %v", err)
	}
	corrupt(t, s, id, 3*BlockSize+1)
	if err := s.Verify(id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a flipped bit: %v", err)
	}
	if s.Has(id) || s.Count() != 0 || s.Bytes() != 0 {
		t.Fatalf("corrupt chunk kept: Has %v Count %d Bytes %d", s.Has(id), s.Count(), s.Bytes())
	}
	mustPut(t, s, data)
	if err := s.Verify(id); err != nil {
		t.Fatalf("Verify after the healing Put: %v", err)
	}

	// Cut short: the healing Put replaces it without a Verify first (its
	// length differs from the chunk's).
	if err := os.Truncate(s.path(id), BlockSize); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, data)
	if got := readAll(t, s, id); !bytes.Equal(got, data) {
		t.Fatal("a Put did not replace a truncated copy")
	}
	if s.Count() != 1 || s.Bytes() != int64(len(data)) {
		t.Fatalf("Count %d Bytes %d after replacing a truncated copy", s.Count(), s.Bytes())
	}
	if got := testutil.ToFloat64(s.m.verifyFailures); got != 1 {
		t.Fatalf("verify failures metric %v, want 1", got)
	}
	if err := s.Verify(Sum([]byte("absent"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Verify of an absent chunk: %v", err)
	}
}

// verifiedRead reads [off, off+n) of chunk id through Reader.Verified.
func verifiedRead(t *testing.T, s *Store, id ID, off, n int64) ([]byte, error) {
	t.Helper()
	r, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.Verified()
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(v, off, n))
}

// TestVerifiedRead: verified reads deliver a good chunk whole and any range
// of it; with a corrupt block, every read that touches it fails with
// ErrCorrupt and delivers none of its bytes, while ranges that do not
// touch it still read. Without cached leaves (a fresh store), the corrupt
// chunk fails whole.
func TestVerifiedRead(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	for _, n := range []int{0, 1, BlockSize, BlockSize + 1, 4*BlockSize + 100} {
		data := randBytes(uint64(800+n), n)
		id := mustPut(t, s, data)
		got, err := verifiedRead(t, s, id, 0, int64(n))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: verified read: %d bytes, %v", n, len(got), err)
		}
		// Ranges at and across block edges, and odd buffer sizes.
		for _, rg := range [][2]int{{0, 1}, {BlockSize - 1, 2}, {BlockSize, BlockSize}, {1, n - 2}, {n - 1, 1}, {n / 2, n}} {
			off, ln := rg[0], min(rg[1], n-rg[0])
			if off < 0 || ln <= 0 || off >= n {
				continue
			}
			got, err := verifiedRead(t, s, id, int64(off), int64(ln))
			if err != nil || !bytes.Equal(got, data[off:off+ln]) {
				t.Fatalf("%d bytes: verified range [%d,+%d): %v", n, off, ln, err)
			}
		}
	}

	data := randBytes(850, 4*BlockSize+100)
	id := mustPut(t, s, data)
	// io.ReaderAt and io.Seeker as the standard library expects them.
	r, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Verified()
	if err != nil {
		t.Fatal(err)
	}
	if err := iotest.TestReader(io.NewSectionReader(v, 0, v.Size()), data); err != nil {
		t.Fatalf("iotest: %v", err)
	}
	r.Close()
	corrupt(t, s, id, 2*BlockSize+5) // block 2
	for _, rg := range [][2]int64{{0, int64(len(data))}, {2 * BlockSize, 1}, {BlockSize, 2 * BlockSize}, {2*BlockSize + 5, 10}} {
		got, err := verifiedRead(t, s, id, rg[0], rg[1])
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("range [%d,+%d) over a corrupt block: err %v", rg[0], rg[1], err)
		}
		if end := rg[0] + int64(len(got)); end > max(rg[0], 2*BlockSize) {
			t.Fatalf("range [%d,+%d): delivered up to %d, into the corrupt block", rg[0], rg[1], end)
		}
		if !bytes.Equal(got, data[rg[0]:rg[0]+int64(len(got))]) {
			t.Fatalf("range [%d,+%d): delivered wrong bytes before the corrupt block", rg[0], rg[1])
		}
	}
	for _, rg := range [][2]int64{{0, 2 * BlockSize}, {3 * BlockSize, BlockSize + 100}} {
		got, err := verifiedRead(t, s, id, rg[0], rg[1])
		if err != nil || !bytes.Equal(got, data[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("range [%d,+%d) clear of the corrupt block: %v", rg[0], rg[1], err)
		}
	}
	// A file of the wrong length under the id.
	long := mustPut(t, s, data[:BlockSize])
	f, err := os.OpenFile(s.path(long), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("appended"))
	f.Close()
	if _, err := verifiedRead(t, s, long, 0, BlockSize); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a chunk file grown by 8 bytes: %v", err)
	}

	// A fresh store knows no leaves: it hashes the chunk whole first.
	s.Close()
	s = openStore(t, dir, Options{})
	if got, err := verifiedRead(t, s, id, 3*BlockSize, 10); !errors.Is(err, ErrCorrupt) || len(got) != 0 {
		t.Fatalf("fresh store, corrupt chunk: %d bytes, %v", len(got), err)
	}
	corrupt(t, s, id, 2*BlockSize+5) // repaired
	if got, err := verifiedRead(t, s, id, 0, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fresh store, repaired chunk: %v", err)
	}
}

// TestStoreProve: a block proven from the store verifies against the id.
func TestStoreProve(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	data := randBytes(900, 6*BlockSize+5)
	id := mustPut(t, s, data)
	for i := 0; i < NumBlocks(int64(len(data))); i++ {
		block, path, length, err := s.Prove(id, i)
		if err != nil {
			t.Fatalf("Prove(%d): %v", i, err)
		}
		if !bytes.Equal(block, blockOf(data, i)) {
			t.Fatalf("Prove(%d) returned another block", i)
		}
		if err := VerifyBlock(id, length, i, block, path); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
	}
	if _, _, _, err := s.Prove(id, 7); !errors.Is(err, ErrBadProof) {
		t.Fatalf("Prove past the end: %v", err)
	}
	// A corrupt block is never proven; the others still are (the leaves
	// cached by the Put are the chunk's).
	corrupt(t, s, id, 10)
	if _, _, _, err := s.Prove(id, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Prove of a corrupt block: %v", err)
	}
	if block, path, length, err := s.Prove(id, 3); err != nil || VerifyBlock(id, length, 3, block, path) != nil {
		t.Fatalf("Prove of an intact block of a corrupt chunk: %v", err)
	}
}

// TestDeletePinned: Delete refuses a pinned chunk until every pin is
// released, and a release is idempotent.
func TestDeletePinned(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	id := mustPut(t, s, []byte("pinned"))
	r1, r2 := s.Pin(id), s.Pin(id)
	if err := s.Delete(id); !errors.Is(err, ErrPinned) {
		t.Fatalf("Delete with two pins: %v", err)
	}
	r1()
	r1() // a second call releases nothing more
	if err := s.Delete(id); !errors.Is(err, ErrPinned) {
		t.Fatalf("Delete with one pin left: %v", err)
	}
	if !s.Pinned(id) {
		t.Fatal("Pinned = false with a pin held")
	}
	r2()
	if err := s.Delete(id); err != nil {
		t.Fatalf("Delete after the releases: %v", err)
	}
	if s.Has(id) || s.Count() != 0 || s.Bytes() != 0 {
		t.Fatal("deleted chunk still counted")
	}
	if err := s.Delete(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	// A reader opened before a Delete keeps its bytes.
	id = mustPut(t, s, []byte("read while deleted"))
	r, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r); string(b) != "read while deleted" {
		t.Fatalf("reader after Delete read %q", b)
	}
}

// TestCollect follows the garbage collector's rule: a chunk whose pin was
// released, or that was put, after the round's mark stays; one released
// before it goes; a pinned one stays; marks older than the previous one
// are refused.
func TestCollect(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	before := mustPut(t, s, []byte("released before the mark"))
	s.Pin(before)()
	old := mustPut(t, s, []byte("put long ago, never pinned"))
	during := mustPut(t, s, []byte("released after the mark"))
	release := s.Pin(during)
	pinned := mustPut(t, s, []byte("pinned across the round"))
	defer s.Pin(pinned)()

	mark := s.Mark()
	release()
	late := mustPut(t, s, []byte("put after the mark"))
	dup := mustPut(t, s, []byte("put long ago, never pinned")) // a duplicate put after the mark
	if dup != old {
		t.Fatal("duplicate put changed id")
	}

	for _, tc := range []struct {
		name string
		id   ID
		want error
	}{
		{"released before the mark", before, nil},
		{"released after the mark", during, ErrPinned},
		{"pinned", pinned, ErrPinned},
		{"put after the mark", late, ErrPinned},
		{"put again after the mark (deduplicated)", old, ErrPinned},
		{"absent", Sum([]byte("never")), ErrNotFound},
	} {
		if err := s.Collect(tc.id, mark); !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%s: Collect = %v, want %v", tc.name, err, tc.want)
		}
	}
	if s.Has(before) || !s.Has(during) || !s.Has(pinned) || !s.Has(late) || !s.Has(old) {
		t.Fatal("Collect removed the wrong chunks")
	}
	// The next round: what was released or put during the last one may
	// go now, except the pinned chunk.
	mark2 := s.Mark()
	for _, id := range []ID{during, late, old} {
		if err := s.Collect(id, mark2); err != nil {
			t.Errorf("second round: Collect %s: %v", id, err)
		}
	}
	if err := s.Collect(pinned, mark2); !errors.Is(err, ErrPinned) {
		t.Errorf("second round: Collect of the pinned chunk: %v", err)
	}
	// mark is the previous mark: still usable. Two marks on, it is stale.
	if err := s.Collect(pinned, mark); !errors.Is(err, ErrPinned) {
		t.Errorf("Collect with the previous mark: %v, want ErrPinned", err)
	}
	s.Mark()
	if err := s.Collect(pinned, mark); !errors.Is(err, ErrStaleMark) {
		t.Errorf("Collect with a mark two rounds old: %v", err)
	}
}

// TestConcurrent: puts of equal and different chunks, pins, deletes and
// verifies at once keep the totals equal to what is on disk (run with
// -race).
func TestConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const workers, rounds = 6, 20
	contents := make([][]byte, 8)
	for i := range contents {
		contents[i] = randBytes(uint64(1000+i), i*BlockSize/3+1)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				data := contents[(w+r)%len(contents)]
				id := Sum(data)
				release := s.Pin(id)
				if err := s.PutExpect(id, bytes.NewReader(data)); err != nil {
					errs <- err
				}
				if err := s.Verify(id); err != nil {
					errs <- fmt.Errorf("pinned chunk: %w", err)
				}
				release()
				if err := s.Delete(Sum(contents[(w+r+3)%len(contents)])); err != nil && !errors.Is(err, ErrPinned) && !errors.Is(err, ErrNotFound) {
					errs <- err
				}
				if r%5 == 0 {
					s.Mark()
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n, bytes int64
	s.Walk(func(_ ID, size int64) error { n++; bytes += size; return nil })
	if s.Count() != n || s.Bytes() != bytes {
		t.Fatalf("store counts %d chunks, %d bytes; disk holds %d, %d", s.Count(), s.Bytes(), n, bytes)
	}
}

// TestMetricsSharedRegistry: two stores on one registry (nodes of one test
// process) add up instead of failing to register.
func TestMetricsSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := openStore(t, t.TempDir(), Options{Registerer: reg})
	b := openStore(t, t.TempDir(), Options{Registerer: reg})
	mustPut(t, a, []byte("aa"))
	mustPut(t, b, []byte("bbb"))
	if got := testutil.ToFloat64(a.m.storedBytes); got != 5 {
		t.Fatalf("stored bytes of both stores %v, want 5", got)
	}
	a.Close()
	if got := testutil.ToFloat64(b.m.chunks); got != 1 {
		t.Fatalf("chunks after closing one store %v, want 1", got)
	}
	if _, err := a.Put(bytes.NewReader(nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

// TestLeafCacheBounded: the cache keeps the most recently used entries up
// to its bound, and none when disabled.
func TestLeafCacheBounded(t *testing.T) {
	c := newLeafCache(2)
	a, b, d := Sum([]byte("a")), Sum([]byte("b")), Sum([]byte("d"))
	c.add(a, blockSums{leaves: []Digest{{1}}})
	c.add(b, blockSums{leaves: []Digest{{2}}})
	c.get(a) // a is now the most recent
	c.add(d, blockSums{leaves: []Digest{{3}}})
	if _, ok := c.get(b); ok {
		t.Fatal("the least recently used entry was kept")
	}
	if l, ok := c.get(a); !ok || l.leaves[0] != (Digest{1}) {
		t.Fatal("a recently used entry was dropped")
	}
	if c.ll.Len() != 2 || len(c.m) != 2 {
		t.Fatalf("cache holds %d/%d entries, bound 2", c.ll.Len(), len(c.m))
	}
	off := newLeafCache(-1)
	off.add(a, blockSums{})
	if _, ok := off.get(a); ok {
		t.Fatal("a disabled cache kept an entry")
	}
}

// TestPutHashed: a chunk stored with the hasher that named it is the same
// chunk as one stored by Put (same id, same bytes, deduplicated against
// it), its leaves are cached for verified reads, and a hasher that kept no
// leaves or hashed another length is refused with nothing stored.
func TestPutHashed(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	data := randBytes(301, 3*BlockSize+17)
	h := NewHasher()
	h.KeepLeaves()
	h.Write(data)
	if err := s.PutHashed(h, data); err != nil {
		t.Fatal(err)
	}
	id := Sum(data)
	if got := readAll(t, s, id); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes back, want the %d put", len(got), len(data))
	}
	if _, ok := s.leaves.get(id); !ok {
		t.Fatal("no leaves cached for a chunk put with its hasher")
	}
	if got, err := verifiedRead(t, s, id, BlockSize-5, 10); err != nil || !bytes.Equal(got, data[BlockSize-5:BlockSize+5]) {
		t.Fatalf("verified read across a block edge: %v", err)
	}
	if b := mustPut(t, s, data); b != id || s.Count() != 1 {
		t.Fatalf("Put of the same bytes: id %s (want %s), %d chunks held", b, id, s.Count())
	}

	other := randBytes(302, BlockSize)
	noLeaves := NewHasher()
	noLeaves.Write(other)
	short := NewHasher()
	short.KeepLeaves()
	short.Write(other[:BlockSize-1])
	for name, h := range map[string]*Hasher{"no leaves kept": noLeaves, "another length": short} {
		if err := s.PutHashed(h, other); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: PutHashed = %v, want ErrMismatch", name, err)
		}
	}
	if s.Count() != 1 || len(tmpFiles(t, s)) != 0 {
		t.Fatalf("refused puts left %d chunks, temp files %v", s.Count(), tmpFiles(t, s))
	}
}
