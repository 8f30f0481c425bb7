package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"
)

// The benchmarks measure what a chunk costs this node (docs/benchmarks.md
// "Chunk store (go test -bench)"): computing an id against plain SHA-256 of
// the same bytes (the tree's overhead), and a durable Put.

func BenchmarkID4MiB(b *testing.B) {
	data := randBytes(1, 4<<20)
	h := NewHasher()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h.Reset()
		h.Write(data)
		h.Sum()
	}
}

func BenchmarkSHA256Plain4MiB(b *testing.B) {
	data := randBytes(1, 4<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}

// BenchmarkIDStream4MiB feeds the hasher in 32 KiB writes, as io.Copy does.
func BenchmarkIDStream4MiB(b *testing.B) {
	data := randBytes(1, 4<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		// struct{io.Reader} hides bytes.Reader's WriterTo, so io.Copy
		// writes 32 KiB at a time as it would from a network body.
		if _, _, err := SumReader(struct{ io.Reader }{bytes.NewReader(data)}); err != nil {
			b.Fatal(err)
		}
	}
}

// putBench puts distinct chunks of size bytes (a counter in the first 8
// bytes defeats deduplication), each synced before Put returns.
func putBench(b *testing.B, size int, parallel bool) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(int64(size))
	if !parallel {
		data := randBytes(2, size)
		var n uint64
		for b.Loop() {
			n++
			binary.LittleEndian.PutUint64(data, n)
			if _, err := s.Put(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		data := randBytes(1000+seed.Add(1), size) // distinct per goroutine
		var n uint64
		for pb.Next() {
			n++
			binary.LittleEndian.PutUint64(data, n)
			if _, err := s.Put(bytes.NewReader(data)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkPut4MiB(b *testing.B)         { putBench(b, 4<<20, false) }
func BenchmarkPut4MiBParallel(b *testing.B) { putBench(b, 4<<20, true) }

// BenchmarkPutDuplicate4MiB: a Put of a chunk already held (hash, no sync).
func BenchmarkPutDuplicate4MiB(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := randBytes(3, 4<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := s.Put(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifiedRead4MiB streams a chunk through Reader.Verified, from
// the page cache, with its leaves cached (as after its Put) and without
// (the first read after a restart: the chunk is hashed whole first).
func BenchmarkVerifiedRead4MiB(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"cached", 0}, {"uncached", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{LeafCacheChunks: bc.cache})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			id, err := s.Put(bytes.NewReader(randBytes(4, 4<<20)))
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 256<<10)
			b.SetBytes(4 << 20)
			for b.Loop() {
				r, err := s.Get(id)
				if err != nil {
					b.Fatal(err)
				}
				v, err := r.Verified()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(io.Discard, io.NewSectionReader(v, 0, v.Size()), buf); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
