package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// failingAt is a bytes.Reader whose reads at or past bad fail.
type failingAt struct {
	*bytes.Reader
	bad int64
}

var errBad = errors.New("bad block")

func (f failingAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.bad {
		n, _ := f.Reader.ReadAt(p[:max(0, f.bad-off)], off)
		return n, errBad
	}
	return f.Reader.ReadAt(p, off)
}

// readAhead returns the same bytes as the source for any mix of seeks and
// reads of any size, ahead or not, and leaves no goroutine behind.
func TestReadAheadMatchesSource(t *testing.T) {
	before := runtime.NumGoroutine()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 5*aheadBlock+12345)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	ra := newReadAhead(bytes.NewReader(data), int64(len(data)))
	// Whole, in io.Copy's 32 KiB reads: past aheadAfter it reads ahead.
	var out bytes.Buffer
	if _, err := io.CopyBuffer(&out, struct{ io.Reader }{ra}, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("a whole read differs from the source")
	}
	if ra.blocks == nil {
		t.Fatal("a 5 MiB read never read ahead")
	}
	for i := range 200 {
		off := rng.Int64N(int64(len(data)) + 10)
		n := 1 + rng.IntN(3*aheadBlock)
		if _, err := ra.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.LimitReader(ra, int64(n)))
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		want := data[min(off, int64(len(data))):min(off+int64(n), int64(len(data)))]
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d at %d of %d bytes: %d bytes differ from the source's %d", i, off, n, len(got), len(want))
		}
	}
	if end, _ := ra.Seek(0, io.SeekEnd); end != int64(len(data)) {
		t.Fatalf("seek to the end: %d", end)
	}
	if n, err := ra.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
	_ = ra.Close()
	// An error of the source, ahead, reaches the reader after the bytes
	// before it, and not earlier.
	bad := int64(3*aheadBlock + 777)
	ra = newReadAhead(failingAt{bytes.NewReader(data), bad}, int64(len(data)))
	got, err := io.ReadAll(ra)
	if !errors.Is(err, errBad) || !bytes.Equal(got, data[:bad]) {
		t.Fatalf("read through a failing block: %d bytes, %v; want %d bytes and errBad", len(got), err, bad)
	}
	_ = ra.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

// countingWriter is a ResponseWriter that records its body and the size of
// every Write.
type countingWriter struct {
	*httptest.ResponseRecorder
	writes []int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes = append(c.writes, len(p))
	return c.ResponseRecorder.Write(p)
}

// TestBulkWriterServesWholeBlocks: http.ServeContent through bulkWriter
// sends the same bytes as the source for a whole file, single ranges and
// multipart ranges, and once reading ahead it writes whole blocks, not
// net/http's 32 KiB pieces. A source error mid-file cuts the body after
// exactly the bytes before it.
func TestBulkWriterServesWholeBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 4*aheadBlock+999)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	serve := func(src io.ReaderAt, rangeHdr string) *countingWriter {
		ra := newReadAhead(src, int64(len(data)))
		defer ra.Close()
		req := httptest.NewRequest(http.MethodGet, "/f", nil)
		if rangeHdr != "" {
			req.Header.Set("Range", rangeHdr)
		}
		w := &countingWriter{ResponseRecorder: httptest.NewRecorder()}
		http.ServeContent(bulkWriter{w}, req, "", time.Time{}, ra)
		return w
	}

	w := serve(bytes.NewReader(data), "")
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), data) {
		t.Fatalf("whole file: status %d, %d bytes, equal %t", w.Code, w.Body.Len(), bytes.Equal(w.Body.Bytes(), data))
	}
	whole := 0
	for _, n := range w.writes {
		if n == aheadBlock {
			whole++
		}
	}
	if whole < 3 || len(w.writes) > 8 {
		t.Fatalf("whole file in %d writes (%v), %d of them whole blocks: want a block per write", len(w.writes), w.writes, whole)
	}

	for _, rg := range [][2]int{{0, 0}, {aheadBlock - 3, aheadBlock + 2}, {100, 3*aheadBlock + 50}, {len(data) - 10, len(data) - 1}} {
		w := serve(bytes.NewReader(data), fmt.Sprintf("bytes=%d-%d", rg[0], rg[1]))
		if w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), data[rg[0]:rg[1]+1]) {
			t.Fatalf("range %v: status %d, %d bytes", rg, w.Code, w.Body.Len())
		}
	}
	w = serve(bytes.NewReader(data), fmt.Sprintf("bytes=5-9,%d-%d", 2*aheadBlock, 2*aheadBlock+10))
	if w.Code != http.StatusPartialContent || !strings.HasPrefix(w.Header().Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(w.Body.Bytes(), data[5:10]) || !bytes.Contains(w.Body.Bytes(), data[2*aheadBlock:2*aheadBlock+11]) {
		t.Fatalf("multipart ranges: status %d, type %q", w.Code, w.Header().Get("Content-Type"))
	}

	bad := int64(2*aheadBlock + 4321)
	w = serve(failingAt{bytes.NewReader(data), bad}, "")
	if !bytes.Equal(w.Body.Bytes(), data[:bad]) {
		t.Fatalf("failing source: %d bytes sent, want the %d before the failure", w.Body.Len(), bad)
	}
}
