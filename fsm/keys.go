package fsm

import (
	"encoding/binary"
	"fmt"
)

// The layout of the node's state DB. Keys are fixed-width big-endian so that
// pebble's byte order is numeric order: every channel (gid) and every
// generation of a channel is one contiguous key range.
//
//	"v"                                  → BE32 store format version
//	'm' | BE64(gid)                      → channel meta, see channelMeta
//	'd' | BE64(gid) | BE64(gen) | userkey → BE64 create index | BE64 modify index | value
//
// A generation is the data of one Restore: Restore loads a snapshot under
// gen+1, switches the meta to it in one synced batch and then deletes gen.
// Data of any generation other than the meta's is garbage from an interrupted
// restore or delete and is removed when the store or the channel opens.
const (
	prefixMeta byte = 'm'
	prefixData byte = 'd'

	// storeFormatVersion is written under formatKey when the store is
	// created; a store of another version is refused rather than misread.
	storeFormatVersion uint32 = 1
	// metaFormatVersion is the first byte of every meta value.
	metaFormatVersion byte = 1

	metaKeyLen     = 1 + 8
	genPrefixLen   = 1 + 8 + 8
	metaValueLen   = 1 + 4*8
	valueHeaderLen = 8 + 8
)

var formatKey = []byte("v")

func metaKey(gid uint64) []byte {
	k := make([]byte, metaKeyLen)
	k[0] = prefixMeta
	binary.BigEndian.PutUint64(k[1:], gid)
	return k
}

// gidPrefix is the start of every data key of gid, all generations.
func gidPrefix(gid uint64) []byte {
	k := make([]byte, 1+8)
	k[0] = prefixData
	binary.BigEndian.PutUint64(k[1:], gid)
	return k
}

// genPrefix is the start of every data key of one generation of gid.
func genPrefix(gid, gen uint64) []byte {
	k := make([]byte, genPrefixLen, genPrefixLen+32)
	k[0] = prefixData
	binary.BigEndian.PutUint64(k[1:], gid)
	binary.BigEndian.PutUint64(k[9:], gen)
	return k
}

func dataKey(gid, gen uint64, key []byte) []byte {
	k := make([]byte, genPrefixLen+len(key))
	k[0] = prefixData
	binary.BigEndian.PutUint64(k[1:], gid)
	binary.BigEndian.PutUint64(k[9:], gen)
	copy(k[genPrefixLen:], key)
	return k
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// parseDataKey splits a data key into its gid, generation and user key.
func parseDataKey(k []byte) (gid, gen uint64, user []byte, ok bool) {
	if len(k) < genPrefixLen || k[0] != prefixData {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:]), k[genPrefixLen:], true
}

// channelMeta is the per-channel record kept beside the data and written in
// the same batch as every change to it.
type channelMeta struct {
	gen     uint64 // the generation holding the live data
	applied uint64 // the last Raft index applied (or restored)
	keys    uint64 // number of live keys
	bytes   uint64 // sum of len(key)+len(value) over live keys
}

func (m channelMeta) encode() []byte {
	v := make([]byte, metaValueLen)
	v[0] = metaFormatVersion
	binary.BigEndian.PutUint64(v[1:], m.gen)
	binary.BigEndian.PutUint64(v[9:], m.applied)
	binary.BigEndian.PutUint64(v[17:], m.keys)
	binary.BigEndian.PutUint64(v[25:], m.bytes)
	return v
}

func decodeMeta(v []byte) (channelMeta, error) {
	if len(v) != metaValueLen {
		return channelMeta{}, fmt.Errorf("fsm: channel meta of %d bytes, want %d", len(v), metaValueLen)
	}
	if v[0] != metaFormatVersion {
		return channelMeta{}, fmt.Errorf("fsm: channel meta format version %d, this build reads %d", v[0], metaFormatVersion)
	}
	return channelMeta{
		gen:     binary.BigEndian.Uint64(v[1:]),
		applied: binary.BigEndian.Uint64(v[9:]),
		keys:    binary.BigEndian.Uint64(v[17:]),
		bytes:   binary.BigEndian.Uint64(v[25:]),
	}, nil
}

func encodeValue(create, modify uint64, value []byte) []byte {
	v := make([]byte, valueHeaderLen+len(value))
	binary.BigEndian.PutUint64(v, create)
	binary.BigEndian.PutUint64(v[8:], modify)
	copy(v[valueHeaderLen:], value)
	return v
}

// decodeValue parses a stored value; the returned value aliases v.
func decodeValue(v []byte) (create, modify uint64, value []byte, err error) {
	if len(v) < valueHeaderLen {
		return 0, 0, nil, fmt.Errorf("fsm: stored value of %d bytes is shorter than its header", len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), v[valueHeaderLen:], nil
}
