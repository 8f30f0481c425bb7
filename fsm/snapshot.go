package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// The snapshot stream of a channel. Like log entries, streams outlive the
// binary that wrote them (they sit in snapshot stores and travel to other
// replicas): change the layout only with a new snapshotVersion, and keep
// reading the old one.
//
//	header:  magic "SHNFSMS\n" (8 bytes)
//	         BE32 format version
//	         BE64 applied index
//	         BE64 key count
//	records: 0x01, uvarint key length, key, uvarint create index,
//	         uvarint modify index, uvarint value length, value
//	         (keys in strictly increasing order)
//	trailer: 0x00, BE64 record count,
//	         BE32 CRC-32C of every byte before this field
//	then the end of the stream.
//
// Version 2 is written when the channel holds idempotency records
// (idem.go), version 1 otherwise, so that a node of a release before
// version 2 still reads the snapshots of a cluster that never used
// idempotency keys. Version 2 differs in two places:
//
//	records: first the idempotency records, 0x02, uvarint key length,
//	         key (it starts with NUL), uvarint value length, value;
//	         then the 0x01 records; all keys strictly increasing
//	trailer: 0x00, BE64 count of 0x01 records, BE64 count of 0x02
//	         records, BE32 CRC-32C of every byte before this field
const (
	snapshotMagic     = "SHNFSMS\n"
	snapshotVersion   = uint32(1)
	snapshotVersionV2 = uint32(2)

	recordMarker  byte = 0x01
	idemMarker    byte = 0x02
	trailerMarker byte = 0x00

	// restoreBatchBytes bounds one pebble batch while loading a snapshot,
	// so that a large channel does not need its whole size in memory.
	restoreBatchBytes = 4 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errSnapshot wraps every problem of a snapshot stream's content.
var errSnapshot = errors.New("fsm: bad snapshot stream")

// Snapshot captures a pebble snapshot of the channel and its applied index.
// It runs on the FSM goroutine and blocks Apply, so it does nothing else;
// Persist does the streaming.
func (c *Channel) Snapshot() (raft.FSMSnapshot, error) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	return &channelSnapshot{
		db:      c.db,
		snap:    c.db.NewSnapshot(),
		gid:     c.gid,
		gen:     c.gen,
		applied: c.applied.Load(),
		keys:    c.keys,
	}, nil
}

type channelSnapshot struct {
	db      *pebble.DB
	snap    *pebble.Snapshot
	gid     uint64
	gen     uint64
	applied uint64
	keys    uint64
	release sync.Once
}

// Persist streams the snapshot into sink; it runs concurrently with Apply.
func (s *channelSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.persist(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot of channel %d at %d: %w", s.gid, s.applied, err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: persist snapshot of channel %d at %d: %w", s.gid, s.applied, err)
	}
	return nil
}

func (s *channelSnapshot) persist(w io.Writer) error {
	// Applies commit without fsync. Raft compacts its log up to the
	// snapshot's index once the snapshot is stored, so the state it claims
	// must be durable first, or a crash could leave the FSM behind a
	// snapshot index that raft will never replay (docs/raft-notes.md "R1"). A synced
	// WAL record makes every earlier write durable.
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	return writeSnapshot(w, s.snap, s.gid, s.gen, s.applied, s.keys)
}

// Release frees the pebble snapshot.
func (s *channelSnapshot) Release() {
	s.release.Do(func() { s.snap.Close() })
}

func writeSnapshot(w io.Writer, r *pebble.Snapshot, gid, gen, applied, keys uint64) error {
	lo := genPrefix(gid, gen)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	valid := it.First()
	// The idempotency records sort first: is there one?
	version := snapshotVersion
	if valid && isIdemKey(it.Key()[genPrefixLen:]) {
		version = snapshotVersionV2
	}

	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	var hdr [8 + 4 + 8 + 8]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint32(hdr[8:], version)
	binary.BigEndian.PutUint64(hdr[12:], applied)
	binary.BigEndian.PutUint64(hdr[20:], keys)
	bw.Write(hdr[:])

	var count, idem uint64
	var buf []byte
	for ; valid; valid = it.Next() {
		_, _, user, ok := parseDataKey(it.Key())
		if !ok {
			return fmt.Errorf("malformed key %x", it.Key())
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if isIdemKey(user) {
			buf = append(buf[:0], idemMarker)
			buf = appendBytes(buf, user)
			buf = binary.AppendUvarint(buf, uint64(len(v)))
			bw.Write(buf)
			if _, err := bw.Write(v); err != nil {
				return err
			}
			idem++
			continue
		}
		create, modify, value, err := decodeValue(v)
		if err != nil {
			return err
		}
		buf = append(buf[:0], recordMarker)
		buf = appendBytes(buf, user)
		buf = binary.AppendUvarint(buf, create)
		buf = binary.AppendUvarint(buf, modify)
		buf = binary.AppendUvarint(buf, uint64(len(value)))
		bw.Write(buf)
		if _, err := bw.Write(value); err != nil {
			return err
		}
		count++
	}
	if err := it.Error(); err != nil {
		return err
	}
	if count != keys {
		return fmt.Errorf("channel %d: %d records but the meta counts %d keys", gid, count, keys)
	}
	tr := binary.BigEndian.AppendUint64([]byte{trailerMarker}, count)
	if version == snapshotVersionV2 {
		tr = binary.BigEndian.AppendUint64(tr, idem)
	}
	bw.Write(tr)
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	_, err = w.Write(sum[:])
	return err
}

// Restore replaces the channel's state with the snapshot in rc (docs/raft-notes.md
// "R1", docs/design.md "D10"). It loads the stream under a new generation,
// checks its trailer, then switches the meta to the new generation and the
// stream's applied index in one synced batch, and only then deletes the old
// generation. On any error the partial new generation is removed and the
// current state is left as it was. The applied index may move backwards.
// Every waiter is woken.
func (c *Channel) Restore(rc io.ReadCloser) error {
	return c.restore(rc, false)
}

// ErrSnapshotBehind is Rebuild's refusal of a snapshot older than the
// state it would replace.
var ErrSnapshotBehind = errors.New("fsm: the snapshot is behind this replica's applied index")

// Rebuild replaces the channel's state with the snapshot in rc, as Restore
// does, but only if the snapshot's applied index is at or after the
// channel's when it switches (ErrSnapshotBehind otherwise, and nothing
// changes): raft does not hand a state machine the entries it applied
// again, so a rebuild must not move the index back. It is how a replica
// whose state a hash check found wrong is rebuilt from a sound one's.
func (c *Channel) Rebuild(rc io.ReadCloser) error {
	return c.restore(rc, true)
}

func (c *Channel) restore(rc io.ReadCloser, notBehind bool) error {
	defer rc.Close()
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	oldGen, newGen := c.gen, c.gen+1
	newLo := genPrefix(c.gid, newGen)
	newHi := prefixEnd(newLo)
	drop := func() {
		if err := c.db.DeleteRange(newLo, newHi, pebble.NoSync); err != nil {
			// Removed at the next open instead.
			c.logger.Error("cannot delete partial snapshot generation", "generation", newGen, "error", err)
		}
	}
	// A leftover of a failed restore in this process would mix with the
	// new data: start from an empty generation.
	drop()

	meta, err := c.load(rc, newGen)
	if err == nil && notBehind && meta.applied < c.applied.Load() {
		err = fmt.Errorf("%w: snapshot at %d, applied %d", ErrSnapshotBehind, meta.applied, c.applied.Load())
	}
	if err != nil {
		drop()
		return fmt.Errorf("fsm: restore channel %d: %w", c.gid, err)
	}
	b := c.db.NewBatch()
	defer b.Close()
	if err := b.Set(metaKey(c.gid), meta.encode(), nil); err != nil {
		drop()
		return fmt.Errorf("fsm: restore channel %d: %w", c.gid, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		drop()
		return fmt.Errorf("fsm: restore channel %d: switch generation: %w", c.gid, err)
	}

	c.stateMu.Lock()
	c.gen = newGen
	c.stateMu.Unlock()
	c.dropIndex(false) // rebuilt from the restored state by the next apply
	c.idemQ = nil      // loaded from the restored state by the next keyed write
	if notBehind {
		// The hashes of the replaced state are not the new state's.
		c.hashMu.Lock()
		c.hashes = nil
		c.hashMu.Unlock()
	}
	c.keys, c.bytes = meta.keys, meta.bytes
	c.applied.Store(meta.applied)
	c.publishStats()
	c.w.reset(meta.applied, false)

	oldLo := genPrefix(c.gid, oldGen)
	if err := c.db.DeleteRange(oldLo, prefixEnd(oldLo), pebble.NoSync); err != nil {
		c.logger.Error("cannot delete the replaced generation; it is removed at the next open", "generation", oldGen, "error", err)
	}
	c.logger.Debug("restored snapshot", "applied", meta.applied, "keys", meta.keys, "generation", newGen)
	return nil
}

// load reads a snapshot stream into generation gen and returns the meta it
// describes.
func (c *Channel) load(rc io.Reader, gen uint64) (channelMeta, error) {
	r := &snapReader{br: bufio.NewReaderSize(rc, 64<<10), crc: crc32.New(crcTable)}
	var hdr [8 + 4 + 8 + 8]byte
	if err := r.full(hdr[:]); err != nil {
		return channelMeta{}, fmt.Errorf("%w: header: %w", errSnapshot, err)
	}
	if string(hdr[:8]) != snapshotMagic {
		return channelMeta{}, fmt.Errorf("%w: not a channel snapshot (magic %q)", errSnapshot, hdr[:8])
	}
	version := binary.BigEndian.Uint32(hdr[8:])
	if version != snapshotVersion && version != snapshotVersionV2 {
		return channelMeta{}, fmt.Errorf("%w: format version %d, this build reads %d and %d", errSnapshot, version, snapshotVersion, snapshotVersionV2)
	}
	meta := channelMeta{gen: gen, applied: binary.BigEndian.Uint64(hdr[12:])}
	wantKeys := binary.BigEndian.Uint64(hdr[20:])

	b := c.db.NewBatch()
	defer func() { b.Close() }()
	var prev, key, value []byte
	var idem uint64
	for {
		marker, err := r.ReadByte()
		if err != nil {
			return channelMeta{}, fmt.Errorf("%w: after %d records: %w", errSnapshot, meta.keys, unexpected(err))
		}
		if marker == trailerMarker {
			break
		}
		if marker == idemMarker && version == snapshotVersionV2 {
			if key, err = r.bytes(key, max(maxIdemKeyBytes, maxSystemKeyBytes)); err != nil {
				return channelMeta{}, fmt.Errorf("%w: idempotency record %d key: %w", errSnapshot, idem, err)
			}
			if value, err = r.bytes(value, maxIdemRecordBytes); err != nil {
				return channelMeta{}, fmt.Errorf("%w: idempotency record %d value: %w", errSnapshot, idem, err)
			}
			if !isIdemKey(key) || (idem > 0 && bytes.Compare(key, prev) <= 0) {
				return channelMeta{}, fmt.Errorf("%w: idempotency record %d: key out of order or not NUL-prefixed", errSnapshot, idem)
			}
			size, err := validSystemRecord(key, value)
			if err != nil {
				return channelMeta{}, fmt.Errorf("%w: idempotency record %d: %w", errSnapshot, idem, err)
			}
			meta.bytes += size
			if err := b.Set(dataKey(c.gid, gen, key), value, nil); err != nil {
				return channelMeta{}, err
			}
			idem++
			prev = append(prev[:0], key...)
			if err := commitFull(c.db, &b); err != nil {
				return channelMeta{}, err
			}
			continue
		}
		if marker != recordMarker {
			return channelMeta{}, fmt.Errorf("%w: record %d: unknown marker 0x%02x", errSnapshot, meta.keys, marker)
		}
		if key, err = r.bytes(key, MaxKeyBytes); err != nil {
			return channelMeta{}, fmt.Errorf("%w: record %d key: %w", errSnapshot, meta.keys, err)
		}
		if err := ValidateKey(key); err != nil {
			return channelMeta{}, fmt.Errorf("%w: record %d: %w", errSnapshot, meta.keys, err)
		}
		if meta.keys+idem > 0 && bytes.Compare(key, prev) <= 0 {
			return channelMeta{}, fmt.Errorf("%w: record %d: keys out of order", errSnapshot, meta.keys)
		}
		create, err := binary.ReadUvarint(r)
		if err != nil {
			return channelMeta{}, fmt.Errorf("%w: record %d: %w", errSnapshot, meta.keys, unexpected(err))
		}
		modify, err := binary.ReadUvarint(r)
		if err != nil {
			return channelMeta{}, fmt.Errorf("%w: record %d: %w", errSnapshot, meta.keys, unexpected(err))
		}
		if create == 0 || create > modify || modify > meta.applied {
			return channelMeta{}, fmt.Errorf("%w: record %d: indexes create %d, modify %d beyond applied %d",
				errSnapshot, meta.keys, create, modify, meta.applied)
		}
		if value, err = r.bytes(value, MaxValueBytes); err != nil {
			return channelMeta{}, fmt.Errorf("%w: record %d value: %w", errSnapshot, meta.keys, err)
		}
		if err := b.Set(dataKey(c.gid, gen, key), encodeValue(create, modify, value), nil); err != nil {
			return channelMeta{}, err
		}
		meta.keys++
		meta.bytes += uint64(len(key) + len(value))
		prev = append(prev[:0], key...)
		if err := commitFull(c.db, &b); err != nil {
			return channelMeta{}, err
		}
	}
	var count [8]byte
	if err := r.full(count[:]); err != nil {
		return channelMeta{}, fmt.Errorf("%w: trailer: %w", errSnapshot, err)
	}
	if version == snapshotVersionV2 {
		var n [8]byte
		if err := r.full(n[:]); err != nil {
			return channelMeta{}, fmt.Errorf("%w: trailer: %w", errSnapshot, err)
		}
		if got := binary.BigEndian.Uint64(n[:]); got != idem {
			return channelMeta{}, fmt.Errorf("%w: %d idempotency records, trailer says %d", errSnapshot, idem, got)
		}
	}
	sum := r.crc.Sum32()
	var want [4]byte
	if _, err := io.ReadFull(r.br, want[:]); err != nil {
		return channelMeta{}, fmt.Errorf("%w: trailer checksum: %w", errSnapshot, unexpected(err))
	}
	if got := binary.BigEndian.Uint32(want[:]); got != sum {
		return channelMeta{}, fmt.Errorf("%w: checksum 0x%08x, computed 0x%08x", errSnapshot, got, sum)
	}
	if n := binary.BigEndian.Uint64(count[:]); n != meta.keys || wantKeys != meta.keys {
		return channelMeta{}, fmt.Errorf("%w: %d records, header says %d, trailer %d", errSnapshot, meta.keys, wantKeys, n)
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the trailer")
		}
		return channelMeta{}, fmt.Errorf("%w: %w", errSnapshot, err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return channelMeta{}, fmt.Errorf("load records: %w", err)
	}
	return meta, nil
}

// commitFull commits *b once it holds restoreBatchBytes and starts another.
func commitFull(db *pebble.DB, b **pebble.Batch) error {
	if (*b).Len() < restoreBatchBytes {
		return nil
	}
	if err := (*b).Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("load records: %w", err)
	}
	(*b).Close()
	*b = db.NewBatch()
	return nil
}

// unexpected turns a clean EOF in the middle of a stream into the error it
// is.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// snapReader reads a snapshot stream and checksums what it reads.
type snapReader struct {
	br  *bufio.Reader
	crc hash.Hash32
	one [1]byte
}

func (r *snapReader) ReadByte() (byte, error) {
	b, err := r.br.ReadByte()
	if err != nil {
		return 0, err
	}
	r.one[0] = b
	r.crc.Write(r.one[:])
	return b, nil
}

func (r *snapReader) full(p []byte) error {
	if _, err := io.ReadFull(r.br, p); err != nil {
		return unexpected(err)
	}
	r.crc.Write(p)
	return nil
}

// bytes reads a length-prefixed string of at most limit bytes into buf.
func (r *snapReader) bytes(buf []byte, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, unexpected(err)
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("length %d beyond %d", n, limit)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if err := r.full(buf); err != nil {
		return nil, err
	}
	return buf, nil
}
