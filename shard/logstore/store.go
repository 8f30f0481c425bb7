package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Store is one group's view of the shared DB. It implements raft.LogStore
// and raft.StableStore; keys are prefixed with the group id so groups never
// see each other's data.
//
// It deliberately does not implement raft.MonotonicLogStore: entries are
// keyed by index, so the gap a snapshot restore leaves is harmless, and
// raft then keeps trailing logs instead of wiping the whole log.
type Store struct {
	db  *DB
	gid uint64
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// GroupID returns the group this view belongs to.
func (s *Store) GroupID() uint64 { return s.gid }

// FirstIndex returns the lowest stored index, or 0 when the log is empty.
func (s *Store) FirstIndex() (uint64, error) {
	idx, err := s.edgeIndex(true)
	if err != nil {
		return 0, fmt.Errorf("logstore: group %d: first index: %w", s.gid, err)
	}
	return idx, nil
}

// LastIndex returns the highest stored index, or 0 when the log is empty.
func (s *Store) LastIndex() (uint64, error) {
	idx, err := s.edgeIndex(false)
	if err != nil {
		return 0, fmt.Errorf("logstore: group %d: last index: %w", s.gid, err)
	}
	return idx, nil
}

// edgeIndex reads the first or last log key of the group with an iterator
// bounded to the group's range, so neighbouring groups and deleted ranges
// are never seen.
func (s *Store) edgeIndex(first bool) (_ uint64, err error) {
	if err := s.db.acquire(); err != nil {
		return 0, err
	}
	defer s.db.mu.RUnlock()
	it, err := s.db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: groupStart(tagLog, s.gid),
		UpperBound: groupEnd(tagLog, s.gid),
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	var valid bool
	if first {
		valid = it.First()
	} else {
		valid = it.Last()
	}
	if !valid {
		return 0, nil // empty, or an iterator error that Close reports
	}
	k := it.Key()
	if len(k) != logKeyLen {
		return 0, fmt.Errorf("%w: %d-byte log key %x", ErrCorrupt, len(k), k)
	}
	return binary.BigEndian.Uint64(k[groupPrefixLen:]), nil
}

// LastFSMIndex returns the largest index at or below max whose entry a
// batching FSM is handed (a command or a configuration entry), or 0 when
// the group stores none there. raft never hands no-op and barrier entries
// to the state machine, so a read index (a commit index) that points at one
// is reached once the state machine applied the entry this answers.
//
// 0 also covers a log compacted behind a snapshot: raft deletes entries
// only once a snapshot holds them, and a state machine already has what a
// snapshot of it, or one it restored, holds (shard restores at boot a state
// machine that is behind its newest snapshot). Callers must ask only about
// committed indexes: a follower's uncommitted entries can still be
// replaced.
//
// It seeks backwards from max over the group's keys and decodes only each
// entry's type byte; between two state machine entries there are only the
// no-op and barrier of each leadership term, so it visits a few keys.
func (s *Store) LastFSMIndex(max uint64) (uint64, error) {
	idx, err := s.lastFSMIndex(max)
	if err != nil {
		return 0, fmt.Errorf("logstore: group %d: last state machine entry at or below %d: %w", s.gid, max, err)
	}
	return idx, nil
}

func (s *Store) lastFSMIndex(max uint64) (_ uint64, err error) {
	if err := s.db.acquire(); err != nil {
		return 0, err
	}
	defer s.db.mu.RUnlock()
	it, err := s.db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: groupStart(tagLog, s.gid),
		UpperBound: logKeyEnd(s.gid, max),
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for valid := it.Last(); valid; valid = it.Prev() {
		k := it.Key()
		if len(k) != logKeyLen {
			return 0, fmt.Errorf("%w: %d-byte log key %x", ErrCorrupt, len(k), k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		if len(v) < logHeaderLen || v[0] != logCodecV1 {
			return 0, fmt.Errorf("%w: log entry %x has no version 1 header", ErrCorrupt, k)
		}
		switch raft.LogType(v[1]) {
		case raft.LogCommand, raft.LogConfiguration:
			return binary.BigEndian.Uint64(k[groupPrefixLen:]), nil
		}
	}
	return 0, nil // none, or an iterator error that Close reports
}

// GetLog reads the entry at index into log. A missing index returns
// raft.ErrLogNotFound itself, unwrapped: raft's replication compares it with
// == to decide to send a snapshot (docs/raft-notes.md "R5").
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	if err := s.db.acquire(); err != nil {
		return fmt.Errorf("logstore: group %d: get log %d: %w", s.gid, index, err)
	}
	defer s.db.mu.RUnlock()
	v, closer, err := s.db.pdb.Get(logKey(s.gid, index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("logstore: group %d: get log %d: %w", s.gid, index, err)
	}
	defer closer.Close()
	// decodeLog copies, so the entry outlives pebble's buffer.
	if err := decodeLog(v, log); err != nil {
		return fmt.Errorf("logstore: group %d: get log %d: %w", s.gid, index, err)
	}
	if log.Index != index {
		return fmt.Errorf("logstore: group %d: get log %d: %w: entry says index %d", s.gid, index, ErrCorrupt, log.Index)
	}
	return nil
}

// StoreLog stores one entry, durably.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores entries atomically and durably: one pebble batch
// committed with Sync. Concurrent commits of different groups share one WAL
// fsync (pebble's group commit), which is the point of the shared store.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	start := time.Now()
	if err := s.storeLogs(logs); err != nil {
		return fmt.Errorf("logstore: group %d: store %d logs from index %d: %w", s.gid, len(logs), logs[0].Index, err)
	}
	m := s.db.metrics
	m.appendSeconds.Observe(time.Since(start).Seconds())
	m.appendBatches.Inc()
	m.appends.Add(float64(len(logs)))
	return nil
}

func (s *Store) storeLogs(logs []*raft.Log) error {
	if err := s.db.acquire(); err != nil {
		return err
	}
	defer s.db.mu.RUnlock()
	s.db.pace.begin()
	defer s.db.pace.end()
	size := 0
	for _, l := range logs {
		size += logKeyLen + encodedLogSize(l) + 16 // + pebble's per-record header
	}
	b := s.db.pdb.NewBatchWithSize(size)
	defer b.Close()
	for _, l := range logs {
		// Encode straight into the batch's buffer: no per-entry allocation.
		n := encodedLogSize(l)
		op := b.SetDeferred(logKeyLen, n)
		putLogKey(op.Key, s.gid, l.Index)
		if enc := appendLog(op.Value[:0], l); len(enc) != n {
			return fmt.Errorf("logstore: internal error: encoded %d bytes, sized %d", len(enc), n)
		}
		if err := op.Finish(); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// DeleteRange deletes the entries min through max, both inclusive, with one
// synced range tombstone. raft uses it for prefix compaction after a
// snapshot and for suffix truncation on a log conflict.
func (s *Store) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	if err := s.db.acquire(); err != nil {
		return fmt.Errorf("logstore: group %d: delete logs %d-%d: %w", s.gid, min, max, err)
	}
	defer s.db.mu.RUnlock()
	if err := s.db.pdb.DeleteRange(logKey(s.gid, min), logKeyEnd(s.gid, max), pebble.Sync); err != nil {
		return fmt.Errorf("logstore: group %d: delete logs %d-%d: %w", s.gid, min, max, err)
	}
	return nil
}

// Set stores a stable value, durably (raft persists its vote with two Sets
// and relies on each being on disk when it returns).
func (s *Store) Set(key, val []byte) error {
	if err := s.set(key, val); err != nil {
		return fmt.Errorf("logstore: group %d: set %q: %w", s.gid, key, err)
	}
	return nil
}

func (s *Store) set(key, val []byte) error {
	if err := s.db.acquire(); err != nil {
		return err
	}
	defer s.db.mu.RUnlock()
	return s.db.pdb.Set(stableKey(s.gid, key), val, pebble.Sync)
}

// Get returns a copy of a stable value, or (nil, nil) when the key is
// missing. Not pebble.ErrNotFound: raft.NewRaft accepts only a nil error or
// one whose text is exactly "not found", so a fresh group would fail to
// start (docs/raft-notes.md "R5").
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.db.acquire(); err != nil {
		return nil, fmt.Errorf("logstore: group %d: get %q: %w", s.gid, key, err)
	}
	defer s.db.mu.RUnlock()
	v, closer, err := s.db.pdb.Get(stableKey(s.gid, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("logstore: group %d: get %q: %w", s.gid, key, err)
	}
	defer closer.Close()
	// Non-nil even when empty, so a stored empty value is not "missing".
	return append(make([]byte, 0, len(v)), v...), nil
}

// SetUint64 stores val as 8 big-endian bytes, durably.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the value SetUint64 stored, or (0, nil) when the key is
// missing.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("logstore: group %d: get %q: %w: %d-byte uint64", s.gid, key, ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
