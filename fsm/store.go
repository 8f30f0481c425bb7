package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrClosed is returned by a Channel or Store used after Close, and by
	// the waits that Close interrupts.
	ErrClosed = errors.New("fsm: closed")
	// ErrChannelOpen is returned by Store.Channel for a gid that is already
	// open, and by DeleteChannel for a gid that is still open.
	ErrChannelOpen = errors.New("fsm: channel already open")
)

// StoreOptions configures a Store.
type StoreOptions struct {
	// Logger receives pebble's and the store's messages; default: none.
	Logger hclog.Logger
	// Registerer, when set, receives the fsm metrics (one registry per node).
	Registerer prometheus.Registerer
	// KeyIndexBytes bounds the memory of the channels' key indexes
	// (keyindex.go) together; 0 means DefaultKeyIndexBytes, a negative
	// value turns them off.
	KeyIndexBytes int64
	// FS is the file system of the state DB; default: the OS's. Tests pass
	// a crashable in-memory FS to cut the power (shard's power-loss test).
	FS vfs.FS
	// OnHash, when set, is called with each hash of a channel's state a
	// hash check produced (hashcheck.go), from the goroutine that computed
	// it and before HashAt returns that hash; it must not block.
	OnHash func(gid, index, hash uint64)
}

// Store is a node's state DB: one pebble DB holding the state of every
// channel replica on the node, each under its own group id prefix.
type Store struct {
	db      *pebble.DB
	logger  hclog.Logger
	metrics *metrics
	waiters atomic.Int64 // blocked WaitKey and WaitApplied calls, all channels
	hashes

	indexMu sync.Mutex
	index   indexBudget

	mu     sync.Mutex
	open   map[uint64]*Channel
	closed bool
}

// OpenStore opens (or creates) the state DB in dir, checks its format version
// and deletes the data of generations left over by an interrupted Restore or
// DeleteChannel.
func OpenStore(dir string, opts StoreOptions) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	db, err := pebble.Open(dir, &pebble.Options{
		Logger:             pebbleLogger{logger.Named("pebble")},
		FormatMajorVersion: pebble.FormatNewest,
		// Applies are NoSync and small; a larger memtable than the 4 MiB
		// default flushes less often under many writing channels
		// (docs/raft-notes.md "R10" measured the same for the log store).
		MemTableSize: 32 << 20,
		FS:           opts.FS, // nil: pebble's default, the OS's
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: open state db %s: %w", dir, err)
	}
	s := &Store{db: db, logger: logger, metrics: m, open: make(map[uint64]*Channel)}
	s.onHash = opts.OnHash
	s.hashSem = make(chan struct{}, hashParallel)
	s.hashStop = make(chan struct{})
	switch {
	case opts.KeyIndexBytes == 0:
		s.index.limit = DefaultKeyIndexBytes
	case opts.KeyIndexBytes > 0:
		s.index.limit = opts.KeyIndexBytes
	}
	if err := s.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.removeLeftovers(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get(formatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], storeFormatVersion)
		if err := s.db.Set(formatKey, b[:], pebble.Sync); err != nil {
			return fmt.Errorf("fsm: write format version: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("fsm: read format version: %w", err)
	}
	defer closer.Close()
	if len(v) != 4 {
		return fmt.Errorf("fsm: format version of %d bytes, want 4", len(v))
	}
	if got := binary.BigEndian.Uint32(v); got != storeFormatVersion {
		return fmt.Errorf("fsm: state db format version %d, this build reads %d", got, storeFormatVersion)
	}
	return nil
}

// removeLeftovers deletes, for every gid with data, every generation other
// than the one its meta names (all of them when there is no meta).
func (s *Store) removeLeftovers() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixData}, UpperBound: []byte{prefixData + 1}})
	if err != nil {
		return fmt.Errorf("fsm: scan state db: %w", err)
	}
	var gids []uint64
	for valid := it.First(); valid; {
		gid, _, _, ok := parseDataKey(it.Key())
		if !ok {
			it.Close()
			return fmt.Errorf("fsm: malformed data key %x", it.Key())
		}
		gids = append(gids, gid)
		end := prefixEnd(gidPrefix(gid))
		if end == nil || end[0] != prefixData {
			break
		}
		valid = it.SeekGE(end)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("fsm: scan state db: %w", err)
	}
	for _, gid := range gids {
		meta, found, err := s.loadMeta(gid)
		if err != nil {
			return err
		}
		if err := s.removeOtherGenerations(gid, meta.gen, found); err != nil {
			return err
		}
	}
	return nil
}

// removeOtherGenerations deletes every data key of gid outside generation
// keep (or every data key when keepAny is false). It writes nothing when
// there is nothing to delete, so that opening a clean store is read-only.
func (s *Store) removeOtherGenerations(gid, keep uint64, keepAny bool) error {
	lo, hi := gidPrefix(gid), prefixEnd(gidPrefix(gid))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("fsm: scan channel %d: %w", gid, err)
	}
	type span struct{ start, end []byte }
	var spans []span
	keepLo := genPrefix(gid, keep)
	keepHi := prefixEnd(keepLo)
	if !keepAny {
		if it.First() {
			spans = append(spans, span{lo, hi})
		}
	} else {
		if it.First() && string(it.Key()) < string(keepLo) {
			spans = append(spans, span{lo, keepLo})
		}
		if keepHi != nil && it.SeekGE(keepHi) {
			spans = append(spans, span{keepHi, hi})
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("fsm: scan channel %d: %w", gid, err)
	}
	if len(spans) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, sp := range spans {
		if err := b.DeleteRange(sp.start, sp.end, nil); err != nil {
			return fmt.Errorf("fsm: delete leftover generations of channel %d: %w", gid, err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("fsm: delete leftover generations of channel %d: %w", gid, err)
	}
	s.logger.Info("deleted leftover state generations", "group", gid, "kept", keep, "has_meta", keepAny)
	return nil
}

// loadMeta reads the meta of gid; a channel that never applied anything has
// none and starts at generation 1, applied index 0.
func (s *Store) loadMeta(gid uint64) (channelMeta, bool, error) {
	v, closer, err := s.db.Get(metaKey(gid))
	if errors.Is(err, pebble.ErrNotFound) {
		return channelMeta{gen: 1}, false, nil
	}
	if err != nil {
		return channelMeta{}, false, fmt.Errorf("fsm: read meta of channel %d: %w", gid, err)
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	if err != nil {
		return channelMeta{}, false, fmt.Errorf("channel %d: %w", gid, err)
	}
	return m, true, nil
}

// Channel opens the state of group gid: its generation, applied index and
// counters. A gid has at most one open Channel at a time.
func (s *Store) Channel(gid uint64) (*Channel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if _, ok := s.open[gid]; ok {
		return nil, fmt.Errorf("channel %d: %w", gid, ErrChannelOpen)
	}
	meta, found, err := s.loadMeta(gid)
	if err != nil {
		return nil, err
	}
	if err := s.removeOtherGenerations(gid, meta.gen, found); err != nil {
		return nil, err
	}
	c := newChannel(s, gid, meta)
	s.open[gid] = c
	return c, nil
}

// DeleteChannel deletes all state of gid (every generation and its meta) in
// one synced batch. The gid's Channel must be closed first.
func (s *Store) DeleteChannel(gid uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.open[gid]; ok {
		return fmt.Errorf("delete channel %d: %w", gid, ErrChannelOpen)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(gidPrefix(gid), prefixEnd(gidPrefix(gid)), nil); err != nil {
		return fmt.Errorf("fsm: delete channel %d: %w", gid, err)
	}
	if err := b.Delete(metaKey(gid), nil); err != nil {
		return fmt.Errorf("fsm: delete channel %d: %w", gid, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("fsm: delete channel %d: %w", gid, err)
	}
	return nil
}

// Waiters returns the number of WaitKey and WaitApplied calls blocked on any
// channel of the store; the server bounds it.
func (s *Store) Waiters() int { return int(s.waiters.Load()) }

// Close closes every open Channel (failing their waiters) and the DB. Raft
// groups using the channels must be shut down first.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	open := make([]*Channel, 0, len(s.open))
	for _, c := range s.open {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	s.stopHashes() // they read pebble snapshots
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("fsm: close state db: %w", err)
	}
	return nil
}

func (s *Store) release(gid uint64, c *Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[gid] == c {
		delete(s.open, gid)
	}
}

// pebbleLogger routes pebble's log lines to hclog; pebble logs every flush
// and compaction at info, which is debug for us.
type pebbleLogger struct{ l hclog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.IsDebug() {
		p.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error(fmt.Sprintf(format, args...)) }

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("fsm: pebble fatal: " + msg)
}
