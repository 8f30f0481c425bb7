package fsm

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
)

// The backup file of a channel (GET /v1/channels/{ch}/snapshot, docs/api.md
// and docs/operations.md "Backup and restore"). Like snapshot streams,
// backups outlive the binary that wrote them: change the layout only with a
// new backupVersion, and keep reading the old one.
//
//	magic "SHNBKUP\n" (8 bytes)
//	BE32 format version (1)
//	BE32 header length, then the header: JSON of BackupHeader
//	the channel's snapshot stream (snapshot.go), whose header holds the
//	   same index as BackupHeader.Index
//	BE64 length of the snapshot stream
//	SHA-256 (32 bytes) of every byte before it
//
// The snapshot stream has its own CRC-32C; the SHA-256 covers the whole
// file, so that a truncated file (its last 40 bytes are then not a
// trailer that matches) or a flipped bit anywhere is refused before a
// restore creates anything.
const (
	backupMagic      = "SHNBKUP\n"
	backupVersion    = uint32(1)
	backupTrailerLen = 8 + sha256.Size
	// maxBackupHeader bounds the JSON header a reader accepts.
	maxBackupHeader = 1 << 20
	// snapHeaderLen is the snapshot stream's header (snapshot.go).
	snapHeaderLen = 8 + 4 + 8 + 8
)

// ErrBadBackup wraps every problem of a backup file's content.
var ErrBadBackup = errors.New("fsm: not a valid backup")

// BackupHeader describes a backup: which channel it came from, and the
// index its state is as of. The channel's settings and size let a restore
// recreate it as it was; the rest is for the operator.
type BackupHeader struct {
	Channel   string `json:"channel"`
	GroupID   uint64 `json:"group_id"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Node served the snapshot.
	Node string `json:"node,omitempty"`
	// Index is the applied index of the snapshot: every write
	// acknowledged before the backup began is at or below it.
	Index uint64 `json:"index"`
	// Term is the group's term on the serving node when the snapshot was
	// taken.
	Term uint64 `json:"term,omitempty"`
	// Created is when the snapshot was taken (RFC 3339, the serving
	// node's clock).
	Created string `json:"created,omitempty"`
	// The channel's record in the meta state at the time.
	Replicas    int              `json:"replicas,omitempty"`
	QuotaBytes  uint64           `json:"quota_bytes,omitempty"`
	ChunkSize   uint64           `json:"chunk_size,omitempty"`
	Settings    *ChannelSettings `json:"settings,omitempty"`
	CreateIndex uint64           `json:"create_index,omitempty"`
}

// SnapshotStreamIndex returns the applied index in the header of a
// channel snapshot stream (its first 28 bytes).
func SnapshotStreamIndex(hdr []byte) (uint64, error) {
	if len(hdr) < snapHeaderLen || string(hdr[:8]) != snapshotMagic {
		return 0, fmt.Errorf("%w: not a channel snapshot", errSnapshot)
	}
	return binary.BigEndian.Uint64(hdr[12:]), nil
}

// WriteBackup writes a backup of the snapshot stream snap into w: h with
// its Index taken from the stream's header, the stream, and the trailer.
// It returns the header written and the bytes of the file. Nothing is
// buffered beyond one copy buffer.
func WriteBackup(w io.Writer, h BackupHeader, snap io.Reader) (BackupHeader, int64, error) {
	var first [snapHeaderLen]byte
	if _, err := io.ReadFull(snap, first[:]); err != nil {
		return h, 0, fmt.Errorf("fsm: backup: read snapshot header: %w", unexpected(err))
	}
	idx, err := SnapshotStreamIndex(first[:])
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
	head := append([]byte(backupMagic), binary.BigEndian.AppendUint32(nil, backupVersion)...)
	head = binary.BigEndian.AppendUint32(head, uint32(len(js)))
	head = append(head, js...)
	if _, err := cw.Write(head); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	start := cw.n
	if _, err := cw.Write(first[:]); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	if _, err := io.Copy(cw, snap); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: copy snapshot at %d bytes: %w", cw.n-start, err)
	}
	if _, err := cw.Write(binary.BigEndian.AppendUint64(nil, uint64(cw.n-start))); err != nil {
		return h, cw.n, fmt.Errorf("fsm: backup: %w", err)
	}
	n, err := w.Write(sum.Sum(nil))
	if err != nil {
		return h, cw.n + int64(n), fmt.Errorf("fsm: backup: %w", err)
	}
	return h, cw.n + int64(n), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BackupReader reads a backup file: OpenBackup reads the header, then Read
// yields the snapshot stream (of a version 2 file, backupchunks.go, it
// reads the chunk section too, handing each chunk to OnChunk). The last 40 bytes of the input are held back
// as the trailer; Read returns io.EOF only once the length and the SHA-256
// in it match what was read (else an error wrapping ErrBadBackup), so a
// consumer that copies the stream somewhere learns at the end whether what
// it wrote is sound.
type BackupReader struct {
	Header BackupHeader
	// Bytes counts the input read so far, header included.
	Bytes int64

	r     io.Reader
	sum   hash.Hash
	buf   []byte
	have  int // bytes in buf
	body  int64
	first [snapHeaderLen]byte
	eof   bool
	err   error

	// OnChunk, when set, takes each chunk of a version 2 file once it was
	// checked against its id (data is reused after it returns); its error
	// ends the read. Set it before the first Read.
	OnChunk func(id [32]byte, data []byte) error
	// Version 2 (backupchunks.go).
	v2                 bool
	raw                io.Reader // the input after the header, buffered
	in                 io.Reader // raw, hashed and counted
	frameLeft          int
	scan               *manifestScan
	chunks, chunkBytes int64
}

// OpenBackup reads a backup's magic, version and header from r.
func OpenBackup(r io.Reader) (*BackupReader, error) {
	b := &BackupReader{r: r, sum: sha256.New(), buf: make([]byte, 256<<10+backupTrailerLen)}
	var pre [8 + 4 + 4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrBadBackup, unexpected(err))
	}
	if string(pre[:8]) != backupMagic {
		return nil, fmt.Errorf("%w: not a shardnet channel backup (magic %q)", ErrBadBackup, pre[:8])
	}
	v := binary.BigEndian.Uint32(pre[8:])
	if v != backupVersion && v != backupVersionChunks {
		return nil, fmt.Errorf("%w: format version %d, this build reads %d and %d", ErrBadBackup, v, backupVersion, backupVersionChunks)
	}
	n := binary.BigEndian.Uint32(pre[12:])
	if n > maxBackupHeader {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrBadBackup, n)
	}
	js := make([]byte, n)
	if _, err := io.ReadFull(r, js); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrBadBackup, unexpected(err))
	}
	if err := json.Unmarshal(js, &b.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
	}
	b.sum.Write(pre[:])
	b.sum.Write(js)
	b.Bytes = int64(len(pre) + len(js))
	if v == backupVersionChunks {
		b.v2, b.buf = true, nil
		b.raw = bufio.NewReaderSize(r, 256<<10)
		b.in = &hashReader{r: b.raw, sum: b.sum, n: &b.Bytes}
	}
	// Version 1 carries no chunks: its snapshot is scanned too, to refuse
	// one that references any (backupchunks.go).
	b.scan = startScan()
	return b, nil
}

// Close ends a read left unfinished (a version 2 file's manifest scanner
// runs until then).
func (b *BackupReader) Close() {
	if b.scan != nil {
		_, _ = b.scan.finish()
	}
}

// Read yields the snapshot stream (see BackupReader).
func (b *BackupReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.v2 {
		n, err := b.readV2(p)
		if err != nil {
			b.Close()
		}
		return n, err
	}
	for {
		if ready := b.have - backupTrailerLen; ready > 0 {
			n := copy(p, b.buf[:ready])
			b.emit(p[:n])
			copy(b.buf, b.buf[n:b.have])
			b.have -= n
			return n, nil
		}
		if b.err != nil {
			b.Close()
			return 0, b.err
		}
		if b.eof {
			b.err = b.verify()
			b.Close()
			continue
		}
		n, err := b.r.Read(b.buf[b.have:])
		b.have += n
		b.Bytes += int64(n)
		if err == io.EOF {
			b.eof = true
		} else if err != nil {
			b.err = err
		}
	}
}

func (b *BackupReader) emit(p []byte) {
	if b.body < snapHeaderLen {
		copy(b.first[b.body:], p)
	}
	b.sum.Write(p)
	b.body += int64(len(p))
	b.scan.write(p)
}

// verify checks the trailer once the input ended: io.EOF when sound.
func (b *BackupReader) verify() error {
	if b.have < backupTrailerLen || b.body < snapHeaderLen {
		return fmt.Errorf("%w: truncated (%d bytes)", ErrBadBackup, b.Bytes)
	}
	tr := b.buf[:backupTrailerLen]
	if n := binary.BigEndian.Uint64(tr); n != uint64(b.body) {
		return fmt.Errorf("%w: truncated or damaged: the trailer counts %d snapshot bytes, the file holds %d", ErrBadBackup, n, b.body)
	}
	b.sum.Write(tr[:8])
	if got := b.sum.Sum(nil); string(got) != string(tr[8:]) {
		return fmt.Errorf("%w: SHA-256 mismatch: the file is damaged", ErrBadBackup)
	}
	idx, err := SnapshotStreamIndex(b.first[:])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadBackup, err)
	}
	if idx != b.Header.Index {
		return fmt.Errorf("%w: the header says index %d, the snapshot %d", ErrBadBackup, b.Header.Index, idx)
	}
	// A stream the scanner cannot parse is left to the snapshot's own
	// checks when it is loaded; one that parses and names chunks cannot
	// be restored whole.
	if refs, err := b.scan.finish(); err == nil && len(refs) > 0 {
		return fmt.Errorf("%w: a version 1 backup of a channel with files: it holds none of their %d chunks", ErrBadBackup, len(refs))
	}
	return io.EOF
}

// SnapshotBytes is the length of the snapshot stream read so far.
func (b *BackupReader) SnapshotBytes() int64 { return b.body }
