// Package logstore owns the node's shared Raft log store: one pebble database
// that holds the log entries and stable-store values (term, vote) of every
// channel Raft group on the node, each group under its own key prefix. It
// leaves the groups themselves, their FSM state, snapshots and the meta
// group's store (raft-boltdb) to others.
//
// # Why one database for all groups
//
// Raft must not acknowledge an entry before it is on disk, so every append is
// an fsync. With one store per group, a node hosting hundreds of groups pays
// one fsync per append per group and tops out at the disk's synced-write rate:
// raft-boltdb (one file per group, two fdatasyncs per append) stayed at 7–8k
// appends/s for any number of groups on the project's VM. One pebble database
// commits the batches of concurrently writing groups together, so they share
// one WAL fsync (group commit): 24 appends per fsync at 256 groups. Measured
// against raft-boltdb per group, that is 8.5× the throughput at 16 groups and
// 18× at 256; with the 64 MiB memtable used here (the 4 MiB default flushes
// ~10×/s and stalls batched writes) 36× at 256 groups; and 2.4× one pebble
// database per group at 16 groups (docs/raft-notes.md "R10"). With many busy
// groups each one's batches are small, so the store also paces its syncs
// (pace.go): 250 µs between syncs while appends are already queued for the
// next one, never for a lone writer.
//
// # Key layout
//
//	"\x00version"                   format version (one byte), checked by Open
//	'l' | BE64(gid) | BE64(index)   a raft.Log, compact binary (codec.go)
//	's' | BE64(gid) | key           a StableStore value
//
// Ids and indexes are fixed-width big-endian, so byte order is numeric order:
// each group is one contiguous key range, FirstIndex/LastIndex are one bounded
// seek, raft's DeleteRange(min, max) and DeleteGroup are range tombstones, and
// no group can ever see another's keys.
//
// # Contract with hashicorp/raft
//
// StoreLogs is one batch committed with Sync; Set, DeleteRange and
// DeleteGroup are synced too. GetLog returns raft.ErrLogNotFound unwrapped
// (raft compares it with ==), and a missing stable key reads as (nil, nil) or
// (0, nil), never pebble.ErrNotFound, whose text makes raft.NewRaft fail on a
// fresh group. Wrap each group's Store in raft.LogCache. raft panics on some
// store errors, for every group of the node: a broken disk stops the node.
package logstore
