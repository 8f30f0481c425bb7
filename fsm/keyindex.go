package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// keyIndex is an in-memory copy of what a channel's writes need to know of
// each live key: its create and modify index and its value's length. With
// it a put or a delete reads no table before it writes. That read was 45 %
// of an apply in BenchmarkApplyPuts and a fifth of each follower's CPU
// under write load (docs/benchmarks.md); etcd keeps the same kind of index
// (its treeIndex) for the same reason.
//
// It is a cache and nothing else: an apply gives the same results and
// writes the same state with or without it (TestKeyIndexChangesNothing), so
// whether a channel has one may depend on the node's memory budget and on
// when it was built. It is built from the state on a channel's first apply
// after it opens or restores, kept up to date by every write of the apply
// path, and dropped when it would outgrow the Store's budget.
type keyIndex struct {
	m    map[string]keyMeta
	cost int64 // bytes charged to the Store's budget
}

type keyMeta struct {
	create, modify uint64
	size           int // len(value)
}

// keyIndexEntryCost is what one key costs besides its bytes: the string
// header, the keyMeta and the map's slot overhead, rounded up.
const keyIndexEntryCost = 72

// DefaultKeyIndexBytes is the key index budget of a Store whose options name
// none: about 2.5 million 30-byte keys over all its channels.
const DefaultKeyIndexBytes = 256 << 20

func entryCost(key []byte) int64 { return int64(len(key)) + keyIndexEntryCost }

// indexBudget is a Store's key index memory, shared by its channels: first
// come, first served.
type indexBudget struct {
	limit int64
	used  int64 // guarded by the Store's indexMu
}

// reserveIndex charges n bytes, or returns false (and charges nothing) when the
// budget cannot take them.
func (s *Store) reserveIndex(n int64) bool {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	if s.index.used+n > s.index.limit {
		return false
	}
	s.index.used += n
	s.metrics.keyIndexBytes.Set(float64(s.index.used))
	return true
}

func (s *Store) releaseIndex(n int64) {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	s.index.used -= n
	s.metrics.keyIndexBytes.Set(float64(s.index.used))
}

// The channel's side, all under applyMu.

// ensureIndex builds the channel's index from its state unless it has one,
// or has given up on one since it opened or restored.
func (c *Channel) ensureIndex() {
	if c.index != nil || c.indexOff {
		return
	}
	if c.s.index.limit == 0 { // turned off by the options
		c.indexOff = true
		return
	}
	if err := c.buildIndex(); err != nil {
		c.indexOff = true
		c.logger.Warn("no key index for this channel; its writes read their keys from the state", "error", err)
	}
}

func (c *Channel) buildIndex() error {
	// Every key costs at least keyIndexEntryCost: a channel that cannot
	// fit that much is not scanned.
	floor := int64(c.keys) * keyIndexEntryCost
	if !c.s.reserveIndex(floor) {
		return fmt.Errorf("%d keys do not fit the node's key index budget", c.keys)
	}
	ix, err := c.scanIndex()
	if err != nil {
		c.s.releaseIndex(floor)
		return err
	}
	if !c.s.reserveIndex(ix.cost - floor) {
		c.s.releaseIndex(floor)
		return fmt.Errorf("%d keys (%d bytes of index) do not fit the node's key index budget", len(ix.m), ix.cost)
	}
	c.index = ix
	c.s.metrics.keyIndexChannels.Inc()
	return nil
}

// scanIndex reads the metadata of every key of the channel's generation.
func (c *Channel) scanIndex() (*keyIndex, error) {
	ix := &keyIndex{m: make(map[string]keyMeta, c.keys)}
	lo := genPrefix(c.gid, c.gen)
	// From the first user key: the idempotency records below it are no
	// keys (idem.go).
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: dataKey(c.gid, c.gen, userKeysStart), UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("scan channel %d: %w", c.gid, err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break // returned by Close
		}
		if len(v) < valueHeaderLen {
			it.Close()
			return nil, fmt.Errorf("channel %d: stored value of %d bytes is shorter than its header", c.gid, len(v))
		}
		key := it.Key()[genPrefixLen:]
		ix.m[string(key)] = keyMeta{
			create: binary.BigEndian.Uint64(v),
			modify: binary.BigEndian.Uint64(v[8:]),
			size:   len(v) - valueHeaderLen,
		}
		ix.cost += entryCost(key)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("scan channel %d: %w", c.gid, err)
	}
	return ix, nil
}

// dropIndex releases the channel's index. off says whether the channel may
// build one again before it reopens or restores.
func (c *Channel) dropIndex(off bool) {
	c.indexOff = off
	if c.index == nil {
		return
	}
	c.s.releaseIndex(c.index.cost)
	c.s.metrics.keyIndexChannels.Dec()
	c.index = nil
}

// indexPut records key's new metadata; it drops the index when the budget
// cannot take a new key.
func (c *Channel) indexPut(key []byte, m keyMeta) {
	ix := c.index
	if ix == nil {
		return
	}
	if _, ok := ix.m[string(key)]; !ok {
		n := entryCost(key)
		if !c.s.reserveIndex(n) {
			c.logger.Warn("key index outgrew the node's budget; this channel's writes read their keys from the state until it reopens",
				"keys", len(ix.m))
			c.dropIndex(true)
			return
		}
		ix.cost += n
	}
	ix.m[string(key)] = m
}

func (c *Channel) indexDelete(key []byte) {
	ix := c.index
	if ix == nil {
		return
	}
	if _, ok := ix.m[string(key)]; ok {
		delete(ix.m, string(key))
		n := entryCost(key)
		ix.cost -= n
		c.s.releaseIndex(n)
	}
}
