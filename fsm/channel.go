package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Channel is the state of one channel replica (Raft group gid) inside the
// node's Store. It implements raft.BatchingFSM. Apply, Snapshot and Restore
// come from the group's Raft goroutines; Get, List, the waits and Stats may
// be called from any goroutine at any time.
type Channel struct {
	s      *Store
	db     *pebble.DB
	gid    uint64
	logger hclog.Logger

	// applyMu serializes the writers: Apply, Snapshot, Restore and Close.
	applyMu sync.Mutex
	// keys and bytes are the live counters, written under applyMu and
	// persisted in every batch's meta.
	keys, bytes uint64
	// index, under applyMu, is the key index when the channel has one;
	// indexOff says not to build one before the next reopen or restore.
	index    *keyIndex
	indexOff bool
	// idemQ, under applyMu, mirrors the idempotency expiry queue when
	// loaded (idem.go); nil otherwise.
	idemQ *idemQueue

	// stateMu guards the generation readers use. Restore takes it
	// exclusively only to switch generations; readers hold it shared for
	// the duration of one read so that the old generation is not deleted
	// under them.
	stateMu sync.RWMutex
	gen     uint64
	closed  bool

	applied atomic.Uint64 // the last index applied or restored
	stats   atomic.Pointer[ChannelStats]

	// applyHook is a test hook (SetApplyHook); nil in production.
	applyHook atomic.Pointer[func(first, last uint64)]

	w *waiters

	// hashMu guards hashes, the latest hashes of the state (hashcheck.go).
	hashMu sync.Mutex
	hashes []*hashRecord
}

var _ raft.BatchingFSM = (*Channel)(nil)

// ChannelStats is a cheap summary of a channel's state.
type ChannelStats struct {
	Keys    uint64 // live keys
	Bytes   uint64 // sum of len(key)+len(value) of the live keys (storage overhead excluded)
	Applied uint64 // as Applied()
}

func newChannel(s *Store, gid uint64, m channelMeta) *Channel {
	c := &Channel{
		s:      s,
		db:     s.db,
		gid:    gid,
		logger: s.logger.With("group", gid),
		keys:   m.keys,
		bytes:  m.bytes,
		gen:    m.gen,
		w:      newWaiters(&s.waiters, m.applied),
	}
	c.applied.Store(m.applied)
	c.publishStats()
	return c
}

func (c *Channel) publishStats() {
	c.stats.Store(&ChannelStats{Keys: c.keys, Bytes: c.bytes, Applied: c.applied.Load()})
}

// Applied returns the index of the last log entry applied to the state (or
// of the snapshot last restored). It is persisted with the data, so after a
// restart it is where the state really is; it is the index to use for
// linearizable reads (not raft's AppliedIndex, docs/raft-notes.md "R2").
func (c *Channel) Applied() uint64 { return c.applied.Load() }

// WaitApplied returns once Applied() >= index, or ctx's error, or ErrClosed.
func (c *Channel) WaitApplied(ctx context.Context, index uint64) error {
	return c.w.waitApplied(ctx, index, c.applied.Load)
}

// SetApplyHook installs a test hook that ApplyBatch calls first, on raft's
// FSM goroutine, with the first and last index of the batch; nil removes it.
// A hook that blocks holds this replica's state machine back while its
// group goes on committing: tests use it to make a leader's state machine
// trail its followers', which hashicorp/raft allows (it applies on the
// leader asynchronously) and a read index must cope with. Not for
// production use.
func (c *Channel) SetApplyHook(h func(first, last uint64)) {
	if h == nil {
		c.applyHook.Store(nil)
		return
	}
	c.applyHook.Store(&h)
}

// Stats returns the channel's key count, approximate size and applied index.
func (c *Channel) Stats() ChannelStats { return *c.stats.Load() }

// Get returns the entry of key, if it exists.
func (c *Channel) Get(key []byte) (Entry, bool, error) {
	c.stateMu.RLock()
	defer c.stateMu.RUnlock()
	if c.closed {
		return Entry{}, false, ErrClosed
	}
	return getEntry(c.db, c.gid, c.gen, key)
}

// reader is what getEntry reads from: the DB, an indexed batch or a snapshot.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getEntry(r reader, gid, gen uint64, key []byte) (Entry, bool, error) {
	v, closer, err := r.Get(dataKey(gid, gen, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("fsm: get channel %d key %q: %w", gid, key, err)
	}
	defer closer.Close()
	create, modify, value, err := decodeValue(v)
	if err != nil {
		return Entry{}, false, fmt.Errorf("channel %d key %q: %w", gid, key, err)
	}
	e := Entry{Key: bytes.Clone(key), CreateIndex: create, ModifyIndex: modify}
	if len(value) > 0 {
		e.Value = bytes.Clone(value)
	}
	return e, true, nil
}

// List returns up to limit entries whose keys start with prefix and sort
// strictly after after (nil: from the start), in key order, and whether more
// such entries follow. A limit <= 0 means no limit.
func (c *Channel) List(prefix, after []byte, limit int) (entries []Entry, more bool, err error) {
	c.stateMu.RLock()
	defer c.stateMu.RUnlock()
	if c.closed {
		return nil, false, ErrClosed
	}
	base := genPrefix(c.gid, c.gen)
	lower := append(base[:len(base):len(base)], prefix...)
	upper := prefixEnd(lower) // never nil: lower starts with 'd'
	if start := dataKey(c.gid, c.gen, userKeysStart); bytes.Compare(lower, start) < 0 {
		lower = start // not the idempotency records (idem.go)
	}
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, fmt.Errorf("fsm: list channel %d: %w", c.gid, err)
	}
	defer it.Close()
	var valid bool
	if after != nil && bytes.Compare(after, prefix) >= 0 {
		// The smallest key strictly greater than after is after+"\x00".
		start := append(append(base[:len(base):len(base)], after...), 0)
		valid = it.SeekGE(start)
	} else {
		valid = it.First()
	}
	for ; valid; valid = it.Next() {
		if limit > 0 && len(entries) == limit {
			return entries, true, nil
		}
		_, _, user, ok := parseDataKey(it.Key())
		if !ok {
			return nil, false, fmt.Errorf("fsm: list channel %d: malformed key %x", c.gid, it.Key())
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, false, fmt.Errorf("fsm: list channel %d: %w", c.gid, err)
		}
		create, modify, value, err := decodeValue(v)
		if err != nil {
			return nil, false, fmt.Errorf("channel %d key %q: %w", c.gid, user, err)
		}
		e := Entry{Key: bytes.Clone(user), CreateIndex: create, ModifyIndex: modify}
		if len(value) > 0 {
			e.Value = bytes.Clone(value)
		}
		entries = append(entries, e)
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("fsm: list channel %d: %w", c.gid, err)
	}
	return entries, false, nil
}

// WaitKey returns nil once key's modify index is above index: it was written
// after index, or it was deleted after index (a delete is a change). It also
// returns nil, possibly early, after a Restore replaced the state, and for a
// missing key when the channel no longer remembers whether it was deleted
// after index; callers re-read and wait again if needed. It returns ctx's
// error when ctx is done and ErrClosed when the channel closes.
func (c *Channel) WaitKey(ctx context.Context, key []byte, index uint64) error {
	counted := false
	defer func() {
		if counted {
			c.s.waiters.Add(-1)
		}
	}()
	for {
		// Register before looking, so that a change committed between the
		// look and the wait still wakes us.
		kw, epoch, err := c.w.registerKey(key)
		if err != nil {
			return err
		}
		changed, err := c.changedSince(key, index)
		if err != nil || changed {
			c.w.unregisterKey(key, kw)
			return err
		}
		if !counted {
			counted = true
			c.s.waiters.Add(1)
		}
		select {
		case <-kw.ch:
			closed, restored := c.w.wokenState(epoch)
			if closed {
				return ErrClosed
			}
			if restored {
				return nil
			}
		case <-ctx.Done():
			c.w.unregisterKey(key, kw)
			return ctx.Err()
		}
	}
}

func (c *Channel) changedSince(key []byte, index uint64) (bool, error) {
	e, found, err := c.Get(key)
	if err != nil {
		return false, err
	}
	if found {
		return e.ModifyIndex > index, nil
	}
	return c.w.deletedSince(key, index), nil
}

// Close fails every waiter with ErrClosed and releases the gid, so that the
// Store can open it again or delete it. Later Apply calls write nothing.
func (c *Channel) Close() {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.stateMu.Lock()
	if c.closed {
		c.stateMu.Unlock()
		return
	}
	c.closed = true
	c.stateMu.Unlock()
	c.dropIndex(true)
	c.idemQ = nil
	c.w.reset(c.applied.Load(), true)
	c.s.release(c.gid, c)
}
