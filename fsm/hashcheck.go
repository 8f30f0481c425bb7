package fsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Replicas that disagree are noticed (etcd's corruption check). A HashCheck
// entry at index I makes every replica hash its state as of I: ApplyBatch
// commits the entries before it, pins that state with a pebble snapshot
// and goes on applying; a goroutine hashes the snapshot off the apply path
// and records (I, hash). Every replica hashes the same state at the same
// index, whatever its batching, so the records of a group's replicas can
// be compared (the shard and cluster layers do that). The hash is of what
// is stored, read back from pebble: a value a disk or a bug changed under
// the state machine changes it, which an incremental hash kept by the
// apply path would not see (fsm/DESIGN.md "Replicas that disagree").

// ErrHashUnknown is returned by HashAt for an index this replica has no
// hash of: no hash check was applied there, this replica did not apply it
// (it restored a snapshot past it, or restarted since), or the record was
// dropped for newer ones.
var ErrHashUnknown = errors.New("fsm: no hash of the state at that index")

const (
	// keepHashes is how many hash records a channel keeps.
	keepHashes = 8
	// hashParallel bounds the snapshots hashed at once on a node.
	hashParallel = 2
)

var hashTable = crc64.MakeTable(crc64.ECMA)

// hashRecord is the hash of a channel's state at one index; hash, keys and
// err are set before done is closed.
type hashRecord struct {
	index uint64
	hash  uint64
	keys  uint64
	err   error
	done  chan struct{}
}

// startHash records a hash of the state in snap (generation gen) as of
// index, computed by a goroutine that releases snap. Called under applyMu.
func (c *Channel) startHash(snap *pebble.Snapshot, gen, index uint64) {
	rec := &hashRecord{index: index, done: make(chan struct{})}
	c.hashMu.Lock()
	// A restore may have moved the index back: records at or after index
	// are of a state this replica no longer has.
	recs := c.hashes[:0]
	for _, r := range c.hashes {
		if r.index < index {
			recs = append(recs, r)
		}
	}
	if len(recs) == keepHashes {
		recs = append(recs[:0], recs[1:]...)
	}
	c.hashes = append(recs, rec)
	c.hashMu.Unlock()

	s := c.s
	s.hashWG.Add(1)
	go func() {
		defer s.hashWG.Done()
		defer snap.Close()
		select {
		case s.hashSem <- struct{}{}:
			rec.hash, rec.keys, rec.err = hashState(snap, c.gid, gen, s.hashStop)
			<-s.hashSem
		case <-s.hashStop:
			rec.err = ErrClosed
		}
		// OnHash hears of the hash before HashAt can return it, so whoever
		// sees a hash through HashAt knows OnHash was told of it too.
		defer close(rec.done)
		if rec.err != nil {
			c.logger.Warn("cannot hash the state for a hash check", "index", index, "error", rec.err)
			return
		}
		s.metrics.hashedKeys.Add(float64(rec.keys))
		if f := s.onHash; f != nil {
			f(c.gid, index, rec.hash)
		}
	}()
}

// HashAt returns the hash of this replica's state as of index, once the
// replica has applied that far and hashed it: ErrHashUnknown when it has no
// hash of that index (see the error), ctx's error, or ErrClosed.
func (c *Channel) HashAt(ctx context.Context, index uint64) (uint64, error) {
	if err := c.WaitApplied(ctx, index); err != nil {
		return 0, err
	}
	var rec *hashRecord
	c.hashMu.Lock()
	for _, r := range c.hashes {
		if r.index == index {
			rec = r
		}
	}
	c.hashMu.Unlock()
	if rec == nil {
		return 0, fmt.Errorf("channel %d index %d: %w", c.gid, index, ErrHashUnknown)
	}
	select {
	case <-rec.done:
		return rec.hash, rec.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// iterable is a pebble DB or snapshot.
type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// hashState hashes every record of generation gen of channel gid in r, in
// key order: the key and the stored value (create index, modify index and
// value bytes) of each, then the record count. The stored bytes are hashed
// as they are, so a damaged value changes the hash rather than failing it.
// It gives up with ErrClosed once stop is closed.
func hashState(r iterable, gid, gen uint64, stop <-chan struct{}) (sum, keys uint64, err error) {
	lo := genPrefix(gid, gen)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	h := crc64.New(hashTable)
	var buf []byte
	for valid := it.First(); valid; valid = it.Next() {
		if keys%1024 == 0 {
			select {
			case <-stop:
				return 0, 0, ErrClosed
			default:
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, 0, err
		}
		user := it.Key()[genPrefixLen:]
		if isConfigKey(user) {
			continue // raft's own, and not kept by older releases (files.go)
		}
		buf = binary.AppendUvarint(buf[:0], uint64(len(user)))
		buf = append(buf, user...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		h.Write(buf)
		h.Write(v)
		keys++
	}
	if err := it.Error(); err != nil {
		return 0, 0, err
	}
	h.Write(binary.AppendUvarint(buf[:0], keys))
	return h.Sum64(), keys, nil
}

// hashes is the part of Store that hash checks use.
type hashes struct {
	onHash   func(gid, index, hash uint64)
	hashSem  chan struct{}
	hashStop chan struct{}
	stopOnce sync.Once
	hashWG   sync.WaitGroup
}

// stopHashes makes running hashes give up and waits for them.
func (h *hashes) stopHashes() {
	h.stopOnce.Do(func() { close(h.hashStop) })
	h.hashWG.Wait()
}

// OverwriteForTest replaces the stored value of an existing key, keeping
// its indexes, directly in pebble: no log entry, no key index or counter
// update, as a disk that returned other bytes would. Tests use it to
// corrupt one replica. Not for production use.
func (c *Channel) OverwriteForTest(key, value []byte) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	e, found, err := getEntry(c.db, c.gid, c.gen, key)
	if err != nil {
		return err
	}
	if !found {
		return ErrKeyNotFound
	}
	return c.db.Set(dataKey(c.gid, c.gen, key), encodeValue(e.CreateIndex, e.ModifyIndex, value), pebble.NoSync)
}
