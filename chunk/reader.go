package chunk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Reader reads one stored chunk. Its io.SectionReader serves Range reads
// (ReadAt, Seek) straight from the file, unverified; Verified reads it
// checking every block against the id first. Close it when done.
type Reader struct {
	*io.SectionReader
	id ID
	f  *os.File
	s  *Store
}

// Get opens the chunk id for reading, or returns ErrNotFound. The reader
// keeps the bytes it opened even if the chunk is deleted meanwhile.
func (s *Store) Get(id ID) (*Reader, error) {
	f, err := os.Open(s.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk: open %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("chunk: open %s: %w", id, err)
	}
	return &Reader{SectionReader: io.NewSectionReader(f, 0, fi.Size()), id: id, f: f, s: s}, nil
}

// ID returns the id of the chunk being read.
func (r *Reader) ID() ID { return r.id }

// Close closes the chunk's file.
func (r *Reader) Close() error { return r.f.Close() }

// Verified returns a reader of the chunk that checks every block before
// it delivers any byte of it: a corrupt block fails with ErrCorrupt (a
// range that does not touch it still reads). Blocks are checked against
// sums taken from bytes that hashed to the id (blocksum.go): from the
// store's cache (filled by Put and by earlier verified reads) or, when
// missing, from one pass over the whole chunk checked against the id,
// which fails with ErrCorrupt if any block is corrupt.
func (r *Reader) Verified() (*Verified, error) {
	sums, err := r.s.sumsOf(r.id, r.f, r.Size())
	if err != nil {
		return nil, err
	}
	if len(sums.leaves) != NumBlocks(r.Size()) || len(sums.crcs) != len(sums.leaves) {
		// A file of the wrong length under the id (cached sums are of
		// the chunk's true length).
		r.s.corruptRead(r.id, -1)
		return nil, fmt.Errorf("chunk: read %s: %d bytes on disk, not %d blocks: %w", r.id, r.Size(), len(sums.leaves), ErrCorrupt)
	}
	return &Verified{r: r, sums: sums}, nil
}

// Verified reads a chunk block by block, checking each against its sums
// (Reader.Verified). Its ReadAt serves Range reads; wrap it in an
// io.SectionReader to stream. Safe for concurrent ReadAt calls.
type Verified struct {
	r    *Reader
	sums blockSums
	// The last block checked for a read smaller than a block, so that
	// reads of a stream in small buffers (io.Copy's 32 KiB) hash each
	// block once.
	mu    sync.Mutex
	last  int
	block []byte
}

// Size returns the chunk's length.
func (v *Verified) Size() int64 { return v.r.Size() }

// ReadAt reads len(p) bytes of the chunk at off, as io.ReaderAt does, each
// block checked before its bytes are copied into p.
func (v *Verified) ReadAt(p []byte, off int64) (int, error) {
	size := v.r.Size()
	if off < 0 {
		return 0, fmt.Errorf("chunk: read %s at %d: negative offset", v.r.id, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < size {
		i := int(off / BlockSize)
		start := int64(i) * BlockSize
		bl := blockLen(size, i)
		var c int
		if off == start && len(p)-n >= bl {
			// A whole block that fits is read and checked in place.
			if err := v.readBlock(i, p[n:n+bl]); err != nil {
				return n, err
			}
			c = bl
		} else {
			v.mu.Lock()
			var err error
			if v.block == nil || v.last != i {
				if v.block == nil {
					v.block = make([]byte, BlockSize)
				}
				v.last = -1
				if err = v.readBlock(i, v.block[:bl]); err == nil {
					v.last = i
				}
			}
			if err == nil {
				c = copy(p[n:], v.block[off-start:bl])
			}
			v.mu.Unlock()
			if err != nil {
				return n, err
			}
		}
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readBlock reads block i into dst (its length) and checks it.
func (v *Verified) readBlock(i int, dst []byte) error {
	if _, err := v.r.f.ReadAt(dst, int64(i)*BlockSize); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the file is shorter than the chunk
		}
		return fmt.Errorf("chunk: read %s block %d: %w", v.r.id, i, err)
	}
	if blockCRC(dst) != v.sums.crcs[i] {
		v.r.s.corruptRead(v.r.id, i)
		return fmt.Errorf("chunk: read %s block %d: %w", v.r.id, i, ErrCorrupt)
	}
	return nil
}

// sumsOf returns the block sums of the chunk id read from f, from the
// cache or by hashing it whole and checking the result against the id.
func (s *Store) sumsOf(id ID, f io.ReaderAt, size int64) (blockSums, error) {
	if sums, ok := s.leaves.get(id); ok {
		return sums, nil
	}
	sums, length, err := readSums(io.NewSectionReader(f, 0, size))
	if err != nil {
		return blockSums{}, fmt.Errorf("chunk: read %s: %w", id, err)
	}
	if IDOf(length, sums.leaves) != id {
		s.corruptRead(id, -1)
		return blockSums{}, fmt.Errorf("chunk: read %s: %w", id, ErrCorrupt)
	}
	s.leaves.add(id, sums)
	return sums, nil
}

// corruptRead counts and logs a read that found chunk id corrupt (block -1:
// somewhere). The chunk stays: Verify removes it, when anti-entropy runs it
// or the caller that got ErrCorrupt asks for it.
func (s *Store) corruptRead(id ID, block int) {
	s.m.verifyFailures.Inc()
	s.log.Error("stored chunk does not match its id (a block fails its checksum, or the chunk its hash)", "chunk", id, "block", block)
}

// Verify re-reads the chunk id and checks that it hashes to its id. A
// corrupt chunk is removed (even if pinned: its bytes are no use to anyone,
// and its absence is what lets a good copy be put back) and ErrCorrupt
// returned; anti-entropy then fetches it from a peer.
func (s *Store) Verify(id ID) error {
	f, err := os.Open(s.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("chunk: verify %s: %w", id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("chunk: verify %s: %w", id, err)
	}
	got, n, err := SumReader(f)
	if err != nil {
		return fmt.Errorf("chunk: verify %s: %w", id, err)
	}
	if got == id {
		return nil
	}
	s.m.verifyFailures.Inc()
	s.log.Error("stored chunk does not hash to its id: removing it", "chunk", id, "size", n)
	st := s.stripe(id)
	st.mu.Lock()
	rerr := s.removeLocked(id, fi)
	st.mu.Unlock()
	if rerr != nil && !errors.Is(rerr, ErrNotFound) {
		return fmt.Errorf("chunk: verify %s: %w (and removing it: %v)", id, ErrCorrupt, rerr)
	}
	return fmt.Errorf("chunk: verify %s: %w", id, ErrCorrupt)
}

// Prove returns block i of the stored chunk id, its audit path and the
// chunk's length: what VerifyBlock needs besides the id. It reads the
// chunk verified (Reader.Verified), so it never proves a corrupt block.
func (s *Store) Prove(id ID, i int) (block []byte, path []Digest, length int64, err error) {
	r, err := s.Get(id)
	if err != nil {
		return nil, nil, 0, err
	}
	defer r.Close()
	v, err := r.Verified()
	if err != nil {
		return nil, nil, 0, err
	}
	if path, err = Prove(v.sums.leaves, i); err != nil {
		return nil, nil, 0, err
	}
	length = r.Size()
	block = make([]byte, blockLen(length, i))
	if _, err := v.ReadAt(block, int64(i)*BlockSize); err != nil {
		return nil, nil, 0, fmt.Errorf("chunk: prove %s: %w", id, err)
	}
	return block, path, length, nil
}
