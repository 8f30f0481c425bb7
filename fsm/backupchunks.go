package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/shardnet/shardnet/chunk"
)

// Backup format version 2: a channel's backup with the chunks of its files
// (docs/operations.md "Backup and restore"), so that a restore needs
// nothing but the file.
//
//	magic "SHNBKUP\n" (8 bytes)
//	BE32 format version (2)
//	BE32 header length, then the header: JSON of BackupHeader
//	snapshot section: the channel's snapshot stream in frames, each a
//	   BE32 length (1 to maxBackupFrame) and that many bytes; a frame of
//	   length 0 ends it
//	chunk section: every chunk the snapshot's manifests reference, each
//	   once, in increasing id order: the id (32 bytes), BE32 length, the
//	   bytes; 32 zero bytes end it
//	BE64 length of the snapshot stream, BE64 count of chunks
//	SHA-256 (32 bytes) of every byte before it
//
// The frames let a reader find the end of the snapshot without parsing it;
// both ends parse it anyway (scanManifests) to learn the chunks it needs,
// so that a file whose chunk section lacks one, or holds another, is
// refused as well as one whose chunk does not hash to its id. Version 1
// (backupfile.go: no chunk section) is still read.
const (
	backupVersionChunks = uint32(2)
	// maxBackupFrame bounds a frame of the snapshot section.
	maxBackupFrame = 1 << 20
	// maxManifestBytes bounds a manifest's value while scanning: its
	// chunk ids and holders at their maximum counts, and room to spare.
	maxManifestBytes = 8 << 20
	// maxScanKeyBytes bounds a key while scanning (keys are far smaller).
	maxScanKeyBytes = 1 << 20
)

// ChunkSource gives a backup the chunks the channel's manifests reference.
type ChunkSource interface {
	// BackupChunk returns the bytes of chunk id, at most limit of them,
	// in buf (or a larger buffer); WriteBackupChunks checks them against
	// the id again.
	BackupChunk(id [32]byte, limit int64, buf []byte) ([]byte, error)
}

// ChunkRef is a chunk a backup holds: its id and the largest chunk size of
// the manifests that reference it (which bounds its length).
type ChunkRef struct {
	ID    [32]byte
	Limit uint64
}

// WriteBackupChunks writes a version 2 backup of the snapshot stream snap
// into w: h with its Index taken from the stream, the stream, and every
// chunk its manifests reference, read from src (nil: the channel must
// hold no file). It returns the header written and the bytes of the file.
// It holds one frame and one chunk in memory, and the list of chunk ids.
func WriteBackupChunks(w io.Writer, h BackupHeader, snap io.Reader, src ChunkSource) (BackupHeader, int64, error) {
	buf := make([]byte, maxBackupFrame)
	if _, err := io.ReadFull(snap, buf[:snapHeaderLen]); err != nil {
		return h, 0, fmt.Errorf("fsm: backup: read snapshot header: %w", unexpected(err))
	}
	idx, err := SnapshotStreamIndex(buf[:snapHeaderLen])
	if err != nil {
		return h, 0, fmt.Errorf("fsm: backup: %w", err)
	}
	h.Index = idx
	js, err := json.Marshal(h)
	if err != nil {
		return h, 0, fmt.Errorf("fsm: backup: %w", err)
	}
	sum := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, sum)}
	head := append([]byte(backupMagic), binary.BigEndian.AppendUint32(nil, backupVersionChunks)...)
	head = binary.BigEndian.AppendUint32(head, uint32(len(js)))
	head = append(head, js...)
	if _, err := cw.Write(head); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	scan := startScan()
	defer scan.finish() // on an early return: the scanner ends
	var body int64
	have := snapHeaderLen
	for {
		if have > 0 {
			frame := binary.BigEndian.AppendUint32(nil, uint32(have))
			if _, err := cw.Write(frame); err != nil {
				return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
			}
			if _, err := cw.Write(buf[:have]); err != nil {
				return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
			}
			scan.write(buf[:have])
			body += int64(have)
		}
		n, err := snap.Read(buf)
		have = n
		if err == io.EOF {
			if have > 0 {
				continue // written above; the next read says EOF again
			}
			break
		}
		if err != nil {
			return h, cw.n, fmt.Errorf("fsm: backup: copy snapshot at %d bytes: %w", body, err)
		}
	}
	if _, err := cw.Write(make([]byte, 4)); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	refs, err := scan.finish()
	if err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	if len(refs) > 0 && src == nil {
		return h, cw.n, fmt.Errorf("fsm: backup: the channel holds files but no chunk source was given")
	}
	for _, ref := range refs {
		data, err := src.BackupChunk(ref.ID, int64(ref.Limit), buf[:0])
		if err != nil {
			return h, cw.n, fmt.Errorf("fsm: backup: chunk %x: %w", ref.ID, err)
		}
		if uint64(len(data)) > ref.Limit || chunk.Sum(data) != chunk.ID(ref.ID) {
			return h, cw.n, fmt.Errorf("fsm: backup: chunk %x: %w", ref.ID, chunk.ErrMismatch)
		}
		rec := binary.BigEndian.AppendUint32(append(make([]byte, 0, 36), ref.ID[:]...), uint32(len(data)))
		if _, err := cw.Write(rec); err != nil {
			return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
		}
		if _, err := cw.Write(data); err != nil {
			return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
		}
		if cap(data) > cap(buf) {
			buf = data[:0:cap(data)]
		}
	}
	tail := make([]byte, 32, 32+16)
	tail = binary.BigEndian.AppendUint64(tail, uint64(body))
	tail = binary.BigEndian.AppendUint64(tail, uint64(len(refs)))
	if _, err := cw.Write(tail); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	n, err := w.Write(sum.Sum(nil))
	if err != nil {
		return h, cw.n + int64(n), fmt.Errorf("fsm: backup: %w", err)
	}
	return h, cw.n + int64(n), nil
}

// manifestScan parses a snapshot stream written to it, in a goroutine of
// its own, and collects the chunk ids its manifests reference.
type manifestScan struct {
	pw    *io.PipeWriter
	done  chan scanResult
	res   *scanResult
	ended bool
}

type scanResult struct {
	refs []ChunkRef
	err  error
}

func startScan() *manifestScan {
	pr, pw := io.Pipe()
	s := &manifestScan{pw: pw, done: make(chan scanResult, 1)}
	go func() {
		refs, err := scanManifests(bufio.NewReaderSize(pr, 64<<10))
		// Whatever is still written goes nowhere: the writer never blocks.
		_, _ = io.Copy(io.Discard, pr)
		s.done <- scanResult{refs, err}
	}()
	return s
}

// write hands p to the scanner; it returns once the scanner took it.
func (s *manifestScan) write(p []byte) {
	if !s.ended {
		_, _ = s.pw.Write(p)
	}
}

// finish ends the stream and returns what the scanner found.
func (s *manifestScan) finish() ([]ChunkRef, error) {
	if s.res == nil {
		s.ended = true
		s.pw.Close()
		r := <-s.done
		s.res = &r
	}
	return s.res.refs, s.res.err
}

// scanManifests reads a channel snapshot stream (snapshot.go) up to its
// trailer and returns the chunks its file manifests reference, each once,
// in increasing id order. It checks the layout, not the CRC (the restore
// that loads the stream does).
func scanManifests(r *bufio.Reader) ([]ChunkRef, error) {
	var hdr [snapHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %w", errSnapshot, unexpected(err))
	}
	if string(hdr[:8]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a channel snapshot", errSnapshot)
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != snapshotVersion && v != snapshotVersionV2 {
		return nil, fmt.Errorf("%w: snapshot version %d", errSnapshot, v)
	}
	limits := map[[32]byte]uint64{}
	var key, val []byte
	uv := func(what string) (uint64, error) {
		v, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %w", errSnapshot, what, unexpected(err))
		}
		return v, nil
	}
	readKey := func() error {
		n, err := uv("key length")
		if err != nil {
			return err
		}
		if n > maxScanKeyBytes {
			return fmt.Errorf("%w: key of %d bytes", errSnapshot, n)
		}
		key = slices.Grow(key[:0], int(n))[:n]
		if _, err := io.ReadFull(r, key); err != nil {
			return fmt.Errorf("%w: key: %w", errSnapshot, unexpected(err))
		}
		return nil
	}
	skip := func(n uint64) error {
		if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			return fmt.Errorf("%w: value: %w", errSnapshot, unexpected(err))
		}
		return nil
	}
	for {
		marker, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: records: %w", errSnapshot, unexpected(err))
		}
		switch marker {
		case trailerMarker:
			refs := make([]ChunkRef, 0, len(limits))
			for id, l := range limits {
				refs = append(refs, ChunkRef{ID: id, Limit: l})
			}
			slices.SortFunc(refs, func(a, b ChunkRef) int { return bytes.Compare(a.ID[:], b.ID[:]) })
			return refs, nil
		case recordMarker:
			// A key: no manifest.
			if err := readKey(); err != nil {
				return nil, err
			}
			if _, err := uv("create index"); err != nil {
				return nil, err
			}
			if _, err := uv("modify index"); err != nil {
				return nil, err
			}
			n, err := uv("value length")
			if err != nil {
				return nil, err
			}
			if err := skip(n); err != nil {
				return nil, err
			}
		case idemMarker:
			// The NUL-prefixed records: idempotency records, the
			// configuration, and the manifests of files.
			if err := readKey(); err != nil {
				return nil, err
			}
			n, err := uv("value length")
			if err != nil {
				return nil, err
			}
			if !isFileKey(key) {
				if err := skip(n); err != nil {
					return nil, err
				}
				continue
			}
			if n > maxManifestBytes {
				return nil, fmt.Errorf("%w: manifest of %d bytes", errSnapshot, n)
			}
			val = slices.Grow(val[:0], int(n))[:n]
			if _, err := io.ReadFull(r, val); err != nil {
				return nil, fmt.Errorf("%w: manifest: %w", errSnapshot, unexpected(err))
			}
			m, err := decodeManifest(string(key[2:]), val)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errSnapshot, err)
			}
			for _, id := range m.Chunks {
				limits[id] = max(limits[id], m.ChunkSize)
			}
		default:
			return nil, fmt.Errorf("%w: record marker %#x", errSnapshot, marker)
		}
	}
}

// hashReader hashes and counts what is read through it.
type hashReader struct {
	r   io.Reader
	sum io.Writer
	n   *int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.sum.Write(p[:n])
	*h.n += int64(n)
	return n, err
}

// readV2 is BackupReader.Read for a version 2 file: the snapshot stream
// out of its frames, then, at the end of the snapshot section, the chunk
// section (each chunk checked and handed to OnChunk) and the trailer;
// io.EOF once all of it is sound.
func (b *BackupReader) readV2(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.frameLeft > 0 {
			n, err := b.in.Read(p[:min(len(p), b.frameLeft)])
			if n > 0 {
				b.frameLeft -= n
				if b.body < snapHeaderLen {
					copy(b.first[b.body:], p[:n])
				}
				b.body += int64(n)
				b.scan.write(p[:n])
				return n, nil
			}
			if err != nil {
				b.err = fmt.Errorf("%w: truncated in the snapshot (%d bytes): %w", ErrBadBackup, b.Bytes, unexpected(err))
			}
			continue
		}
		var l [4]byte
		if _, err := io.ReadFull(b.in, l[:]); err != nil {
			b.err = fmt.Errorf("%w: truncated in the snapshot (%d bytes): %w", ErrBadBackup, b.Bytes, unexpected(err))
			continue
		}
		switch n := binary.BigEndian.Uint32(l[:]); {
		case n == 0:
			b.err = b.finishV2()
		case n > maxBackupFrame:
			b.err = fmt.Errorf("%w: a snapshot frame of %d bytes", ErrBadBackup, n)
		default:
			b.frameLeft = int(n)
		}
	}
}

// finishV2 reads the chunk section and the trailer: io.EOF when sound.
func (b *BackupReader) finishV2() error {
	refs, err := b.scan.finish()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadBackup, err)
	}
	if b.body < snapHeaderLen {
		return fmt.Errorf("%w: truncated (%d bytes)", ErrBadBackup, b.Bytes)
	}
	if idx, err := SnapshotStreamIndex(b.first[:]); err != nil || idx != b.Header.Index {
		return fmt.Errorf("%w: the header says index %d, the snapshot %d (%v)", ErrBadBackup, b.Header.Index, idx, err)
	}
	var buf []byte
	var rec [36]byte
	for i := 0; ; i++ {
		if _, err := io.ReadFull(b.in, rec[:32]); err != nil {
			return fmt.Errorf("%w: truncated in the chunks (%d bytes): %w", ErrBadBackup, b.Bytes, unexpected(err))
		}
		var id [32]byte
		copy(id[:], rec[:32])
		if id == ([32]byte{}) {
			if i != len(refs) {
				return fmt.Errorf("%w: %d chunks of the %d the manifests reference", ErrBadBackup, i, len(refs))
			}
			break
		}
		if i >= len(refs) || refs[i].ID != id {
			return fmt.Errorf("%w: chunk %x is not the one the manifests call for next", ErrBadBackup, id)
		}
		if _, err := io.ReadFull(b.in, rec[32:]); err != nil {
			return fmt.Errorf("%w: truncated in the chunks: %w", ErrBadBackup, unexpected(err))
		}
		n := uint64(binary.BigEndian.Uint32(rec[32:]))
		if n > refs[i].Limit || n > MaxChunkSize {
			return fmt.Errorf("%w: chunk %x of %d bytes, over its manifest's chunk size %d", ErrBadBackup, id, n, refs[i].Limit)
		}
		buf = slices.Grow(buf[:0], int(n))[:n]
		if _, err := io.ReadFull(b.in, buf); err != nil {
			return fmt.Errorf("%w: truncated in chunk %x: %w", ErrBadBackup, id, unexpected(err))
		}
		if chunk.Sum(buf) != chunk.ID(id) {
			return fmt.Errorf("%w: chunk %x does not hash to its id: the file is damaged", ErrBadBackup, id)
		}
		if b.OnChunk != nil {
			if err := b.OnChunk(id, buf); err != nil {
				return err
			}
		}
		b.chunks++
		b.chunkBytes += int64(n)
	}
	var tr [16]byte
	if _, err := io.ReadFull(b.in, tr[:]); err != nil {
		return fmt.Errorf("%w: truncated in the trailer: %w", ErrBadBackup, unexpected(err))
	}
	if s, c := binary.BigEndian.Uint64(tr[:]), binary.BigEndian.Uint64(tr[8:]); s != uint64(b.body) || c != uint64(b.chunks) {
		return fmt.Errorf("%w: the trailer counts %d snapshot bytes and %d chunks, the file holds %d and %d", ErrBadBackup, s, c, b.body, b.chunks)
	}
	want := b.sum.Sum(nil)
	var got [sha256.Size]byte
	if _, err := io.ReadFull(b.raw, got[:]); err != nil {
		return fmt.Errorf("%w: truncated in the trailer: %w", ErrBadBackup, unexpected(err))
	}
	b.Bytes += sha256.Size
	if !bytes.Equal(want, got[:]) {
		return fmt.Errorf("%w: SHA-256 mismatch: the file is damaged", ErrBadBackup)
	}
	var one [1]byte
	if n, _ := io.ReadFull(b.raw, one[:]); n != 0 {
		return fmt.Errorf("%w: bytes after the trailer", ErrBadBackup)
	}
	return io.EOF
}

// Chunks returns how many chunks, and bytes of them, the chunk section held
// (once Read returned io.EOF).
func (b *BackupReader) Chunks() (count, bytes int64) { return b.chunks, b.chunkBytes }
