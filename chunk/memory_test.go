package chunk

import (
	"io"
	"runtime"
	"testing"
)

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// repeatReader yields n bytes cycling through pattern, allocating nothing.
type repeatReader struct {
	pattern []byte
	n, off  int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		p[i] = r.pattern[(r.off+int64(i))%int64(len(r.pattern))]
	}
	r.off += int64(len(p))
	return len(p), nil
}

// TestHasherConstantMemory: hashing 256 MiB (4,096 blocks) allocates a few
// KiB, not anything that grows with the chunk.
func TestHasherConstantMemory(t *testing.T) {
	src := randBytes(1, 1<<20)
	h := NewHasher()
	got := allocated(func() {
		for i := 0; i < 256; i++ {
			h.Write(src)
		}
		h.Sum()
	})
	t.Logf("hashing 256 MiB allocated %d bytes", got)
	if got > 16<<10 {
		t.Fatalf("hashing 256 MiB allocated %d bytes", got)
	}
	if len(h.stack) != 1 {
		t.Fatalf("stack of %d subtrees after 2^12 blocks, want 1", len(h.stack))
	}
}

// TestPutStreams: a 4 MiB Put does not hold the chunk in memory: it
// allocates a small fraction of the chunk (the copy buffer is pooled; the
// leaves are 2 KiB).
func TestPutStreams(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	pattern := randBytes(2, 4093)
	mustPut(t, s, []byte("warm the buffer pool"))
	var err error
	got := allocated(func() {
		for i := int64(0); i < 4 && err == nil; i++ {
			_, err = s.Put(&repeatReader{pattern: pattern[i:], n: DefaultMaxChunkSize})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if per := got / 4; per > 256<<10 {
		t.Fatalf("a 4 MiB Put allocated %d bytes", per)
	}
}
