package logstore

import "encoding/binary"

// Key layout. Every key starts with one tag byte; group ids and log indexes
// are fixed-width big-endian so that byte order is numeric order: a group's
// keys are one contiguous range, and within it logs sort by index (a varint or
// little-endian encoding would break both, docs/raft-notes.md "R10").
//
//	"\x00version"                       format version record (one byte)
//	'l' | BE64(gid) | BE64(index)       one raft.Log, encoded by codec.go
//	's' | BE64(gid) | key bytes         one StableStore value
const (
	tagLog    byte = 'l'
	tagStable byte = 's'

	groupPrefixLen = 1 + 8
	logKeyLen      = groupPrefixLen + 8
)

// versionKey sorts before every group key, so it never shows up in a
// group's range.
var versionKey = []byte("\x00version")

// groupStart is the first possible key of gid under tag.
func groupStart(tag byte, gid uint64) []byte {
	k := make([]byte, groupPrefixLen, logKeyLen)
	k[0] = tag
	binary.BigEndian.PutUint64(k[1:], gid)
	return k
}

// groupEnd is the exclusive upper bound of gid's keys under tag. The last
// group id has no successor, so its bound is the next tag instead.
func groupEnd(tag byte, gid uint64) []byte {
	if gid == ^uint64(0) {
		return []byte{tag + 1}
	}
	return groupStart(tag, gid+1)
}

func logKey(gid, index uint64) []byte {
	k := make([]byte, logKeyLen)
	putLogKey(k, gid, index)
	return k
}

// putLogKey writes a log key into k, which must be logKeyLen bytes long.
func putLogKey(k []byte, gid, index uint64) {
	k[0] = tagLog
	binary.BigEndian.PutUint64(k[1:], gid)
	binary.BigEndian.PutUint64(k[groupPrefixLen:], index)
}

// logKeyEnd is the exclusive bound for a DeleteRange ending at index max
// (inclusive).
func logKeyEnd(gid, max uint64) []byte {
	if max == ^uint64(0) {
		return groupEnd(tagLog, gid)
	}
	return logKey(gid, max+1)
}

func stableKey(gid uint64, key []byte) []byte {
	k := make([]byte, groupPrefixLen+len(key))
	k[0] = tagStable
	binary.BigEndian.PutUint64(k[1:], gid)
	copy(k[groupPrefixLen:], key)
	return k
}
