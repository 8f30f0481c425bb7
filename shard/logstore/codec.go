package logstore

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Log value layout, version 1:
//
//	+---------+------+-------+---------+---------+--------------+----------+------+----------+------------+
//	| version | type | flags | index   | term    | appendedAt   | len      | data | len      | extensions |
//	| 1 byte  | 1 B  | 1 B   | uvarint | uvarint | varint (opt) | uvarint  |      | uvarint  |            |
//	+---------+------+-------+---------+---------+--------------+----------+------+----------+------------+
//
// appendedAt is unix nanoseconds, present only when flags has flagAppendedAt
// (raft leaves it zero for entries written by old versions and in tests).
//
// Encoded entries live on disk for as long as the log keeps them, and a node
// upgraded in place must still read what the old binary wrote: never change
// the meaning of a field, add a new version byte instead. The encoding is
// hand-written, not msgpack by reflection (raft-boltdb's choice): with group
// commit the shared store is CPU-bound, not fsync-bound, at 64+ busy groups
// (docs/raft-notes.md "R10"), so per-entry encoding cost matters.
const (
	logCodecV1 byte = 1

	flagAppendedAt byte = 1 << 0
	knownFlags          = flagAppendedAt

	logHeaderLen = 3
)

// encodedLogSize returns the exact length appendLog produces for l.
func encodedLogSize(l *raft.Log) int {
	n := logHeaderLen + uvarintLen(l.Index) + uvarintLen(l.Term)
	if !l.AppendedAt.IsZero() {
		n += varintLen(l.AppendedAt.UnixNano())
	}
	n += uvarintLen(uint64(len(l.Data))) + len(l.Data)
	n += uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
	return n
}

// appendLog appends the encoding of l to dst.
func appendLog(dst []byte, l *raft.Log) []byte {
	var flags byte
	if !l.AppendedAt.IsZero() {
		flags |= flagAppendedAt
	}
	dst = append(dst, logCodecV1, byte(l.Type), flags)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	if flags&flagAppendedAt != 0 {
		dst = binary.AppendVarint(dst, l.AppendedAt.UnixNano())
	}
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	return dst
}

// decodeLog decodes b into out. Data and Extensions are copied, so b may be
// a buffer pebble reuses. Malformed input gives an error wrapping
// ErrCorrupt, never a panic: the decoder is fuzzed (FuzzDecodeLog).
func decodeLog(b []byte, out *raft.Log) error {
	if len(b) < logHeaderLen {
		return fmt.Errorf("%w: %d-byte value is shorter than the header", ErrCorrupt, len(b))
	}
	if b[0] != logCodecV1 {
		return fmt.Errorf("%w: unknown log encoding version %d", ErrCorrupt, b[0])
	}
	typ, flags := raft.LogType(b[1]), b[2]
	if flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	d := decoder{b: b[logHeaderLen:]}
	index := d.uvarint("index")
	term := d.uvarint("term")
	var appendedAt time.Time
	if flags&flagAppendedAt != 0 {
		appendedAt = time.Unix(0, d.varint("appendedAt"))
	}
	data := d.bytes("data")
	ext := d.bytes("extensions")
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	*out = raft.Log{
		Index:      index,
		Term:       term,
		Type:       typ,
		Data:       data,
		Extensions: ext,
		AppendedAt: appendedAt,
	}
	return nil
}

// decoder reads fields in sequence and keeps the first error, so that
// decodeLog reads as the layout it implements.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad uvarint in %s", ErrCorrupt, field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint in %s", ErrCorrupt, field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed field and copies it; empty fields decode as
// nil.
func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err != nil {
		return nil
	}
	// Compare in uint64: converting a huge n to int first could wrap.
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: %s length %d exceeds the %d bytes left", ErrCorrupt, field, n, len(d.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b)
	d.b = d.b[n:]
	return out
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	// Zig-zag, as binary.PutVarint does.
	ux := uint64(v) << 1
	if v < 0 {
		ux = ^ux
	}
	return uvarintLen(ux)
}
