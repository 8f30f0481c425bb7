package chunk

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader reads one stored chunk. Its io.SectionReader serves Range reads
// (ReadAt, Seek) straight from the file, unverified; Verified streams the
// chunk checking it against its id. Close it when done.
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

// Verified returns a reader of the whole chunk from its start that hashes
// every block as it passes and holds the last block back until the chunk
// has hashed to its id: a reader that gets io.EOF got exactly the chunk's
// bytes; a corrupt chunk ends in an error wrapping ErrCorrupt instead, before
// its last block is delivered. (Blocks before the last cannot be checked on
// their own without the leaf hashes, which the store does not keep; see
// chunk/DESIGN.md "Reading".)
func (r *Reader) Verified() io.Reader {
	return &verifier{src: io.NewSectionReader(r.f, 0, r.Size()), size: r.Size(), id: r.id, h: NewHasher(), s: r.s}
}

type verifier struct {
	src  io.Reader
	size int64
	id   ID
	h    *Hasher
	s    *Store
	buf  []byte // the current block, buf[off:] not yet delivered
	off  int
	read int64 // bytes read from src
	err  error // sticky
}

func (v *verifier) Read(p []byte) (int, error) {
	for v.off == len(v.buf) {
		if v.err != nil {
			return 0, v.err
		}
		v.fill()
	}
	n := copy(p, v.buf[v.off:])
	v.off += n
	return n, nil
}

// fill reads the next block into buf; for the last block it first checks
// the id, and sets err (io.EOF or the corruption) for after it.
func (v *verifier) fill() {
	if v.buf == nil {
		v.buf = make([]byte, BlockSize)
	}
	want := BlockSize
	if rest := v.size - v.read; rest < BlockSize {
		want = int(rest)
	}
	n, err := io.ReadFull(v.src, v.buf[:want])
	v.buf, v.off = v.buf[:n], 0
	v.read += int64(n)
	v.h.Write(v.buf[:n])
	if err != nil && want > 0 {
		v.buf = v.buf[:0]
		v.err = fmt.Errorf("chunk: read %s: %w", v.id, err)
		return
	}
	if v.read < v.size {
		return
	}
	if v.h.Sum() != v.id {
		v.buf = v.buf[:0] // the last block is withheld
		v.s.m.verifyFailures.Inc()
		v.s.log.Error("stored chunk does not hash to its id", "chunk", v.id)
		v.err = fmt.Errorf("chunk: read %s: %w", v.id, ErrCorrupt)
		return
	}
	v.err = io.EOF
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
// chunk's length: what VerifyBlock needs besides the id. It reads the whole
// chunk to compute the leaf hashes, and checks them against the id first,
// so it never proves a corrupt block.
func (s *Store) Prove(id ID, i int) (block []byte, path []Digest, length int64, err error) {
	r, err := s.Get(id)
	if err != nil {
		return nil, nil, 0, err
	}
	defer r.Close()
	leaves, length, err := Leaves(io.NewSectionReader(r.f, 0, r.Size()))
	if err != nil {
		return nil, nil, 0, err
	}
	if IDOf(length, leaves) != id {
		s.m.verifyFailures.Inc()
		return nil, nil, 0, fmt.Errorf("chunk: prove %s: %w", id, ErrCorrupt)
	}
	if path, err = Prove(leaves, i); err != nil {
		return nil, nil, 0, err
	}
	block = make([]byte, blockLen(length, i))
	if _, err := r.ReadAt(block, int64(i)*BlockSize); err != nil {
		return nil, nil, 0, fmt.Errorf("chunk: prove %s: %w", id, err)
	}
	if LeafHash(block) != leaves[i] {
		return nil, nil, 0, fmt.Errorf("chunk: prove %s: block %d changed while read: %w", id, i, ErrCorrupt)
	}
	return block, path, length, nil
}
