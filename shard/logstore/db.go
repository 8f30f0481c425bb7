package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// formatVersion is the on-disk layout this build writes and reads (keys.go,
// codec.go). Bump it on any incompatible change; Open refuses other values.
const formatVersion byte = 1

// DefaultMemTableSize replaces pebble's 4 MiB default, which flushes about
// 10 times a second under load and stalls batched writes; 64 MiB doubled
// throughput at 256 groups and removed the stalls (docs/raft-notes.md "R10").
const DefaultMemTableSize = 64 << 20

// Options configures Open. The zero value is usable.
type Options struct {
	// Logger receives pebble's own log lines under the name "pebble", at a
	// quiet level (pebble logs every flush). Default: a null logger.
	Logger hclog.Logger
	// MemTableSize is pebble's memtable size. Default: DefaultMemTableSize.
	// Up to two memtables may be held in memory at once.
	MemTableSize uint64
	// Registerer, if non-nil, receives the store's metrics. A node has one
	// registry; Close unregisters so the store can be reopened on it.
	Registerer prometheus.Registerer
	// FS is the file system pebble uses, for fault injection in tests
	// (SlowFS). Default: pebble's default, the OS file system.
	FS vfs.FS
}

// DB is one node's shared Raft log store: one pebble database holding the
// logs and stable-store values of every group on the node.
//
// All methods are safe for concurrent use. Every method of DB and of its
// Stores returns ErrClosed after Close; shut down the Raft groups first.
type DB struct {
	dir     string
	log     hclog.Logger
	metrics *metrics

	// mu makes Close wait for operations in flight, and later operations
	// fail with ErrClosed instead of the panic pebble gives when used after
	// Close. Operations hold the read lock for their whole pebble call.
	mu     sync.RWMutex
	closed bool
	pdb    *pebble.DB

	pace *syncPace // shared with pebble's WALMinSyncInterval (pace.go)
}

// Open opens or creates the log store in dir. A new store gets a format
// version record; an existing one must carry the version this build knows.
func Open(dir string, opts Options) (*DB, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = DefaultMemTableSize
	}
	pace := &syncPace{}
	m, err := newMetrics(opts.Registerer, pace)
	if err != nil {
		return nil, fmt.Errorf("logstore: open %s: %w", dir, err)
	}
	po := pebbleOptions(opts, m)
	po.WALMinSyncInterval = pace.interval
	pdb, err := pebble.Open(dir, po)
	if err != nil {
		m.unregister()
		return nil, fmt.Errorf("logstore: open %s: %w", dir, err)
	}
	if err := checkVersion(pdb); err != nil {
		_ = pdb.Close()
		m.unregister()
		return nil, fmt.Errorf("logstore: open %s: %w", dir, err)
	}
	return &DB{dir: dir, log: opts.Logger, metrics: m, pdb: pdb, pace: pace}, nil
}

// pebbleOptions tunes pebble for a write-mostly log: entries are appended,
// read back soon (mostly served by raft.LogCache) and deleted in ranges after
// a snapshot.
func pebbleOptions(opts Options, m *metrics) *pebble.Options {
	plog := opts.Logger.Named("pebble")
	po := &pebble.Options{
		// Explicit, because pebble's default format may change between
		// releases; this is the newest one v2.1.7 knows.
		FormatMajorVersion: pebble.FormatValueSeparation,
		MemTableSize:       opts.MemTableSize,
		// Every group's keys land in every flushed table (keys are interleaved
		// by group id), so each flush adds an L0 sublevel. Compact L0 as soon
		// as two are stacked to keep GetLog and First/LastIndex cheap, and
		// stop writes only far later than pebble's 12: a write stop blocks the
		// appends of every group on the node at once, and raft's own
		// back-pressure (proposals in flight) bounds the backlog.
		L0CompactionThreshold: 2,
		L0StopWritesThreshold: 64,
		Logger:                pebbleLogger{log: plog, level: hclog.Debug},
		EventListener:         eventListener(plog, m),
		// WALMinSyncInterval is set by Open: an adaptive pace (pace.go).
	}
	if opts.FS != nil {
		// pebble skips its disk-health wrapper for a caller's FS; keep it.
		po.FS = opts.FS
		po.WithFSDefaults()
	}
	po.EnsureDefaults()
	return po
}

// checkVersion writes the version record into an empty database and
// refuses a database with another version or with data but no version.
func checkVersion(pdb *pebble.DB) error {
	v, closer, err := pdb.Get(versionKey)
	switch {
	case err == nil:
		defer closer.Close()
		if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("%w: store has version %x, this build reads %d", ErrUnsupportedVersion, v, formatVersion)
		}
		return nil
	case !errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("read format version: %w", err)
	}
	it, err := pdb.NewIter(nil)
	if err != nil {
		return fmt.Errorf("check for data: %w", err)
	}
	hasData := it.First()
	if err := it.Close(); err != nil {
		return fmt.Errorf("check for data: %w", err)
	}
	if hasData {
		return fmt.Errorf("%w: data without a format version record (not a log store?)", ErrUnsupportedVersion)
	}
	if err := pdb.Set(versionKey, []byte{formatVersion}, pebble.Sync); err != nil {
		return fmt.Errorf("write format version: %w", err)
	}
	return nil
}

// acquire takes the read lock for one operation, failing after Close. The
// caller must call db.mu.RUnlock when it returned nil.
func (db *DB) acquire() error {
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Group returns the view of group gid. It is cheap and holds no resources:
// call it once per replica and hand the result (wrapped in raft.LogCache) to
// raft as both LogStore and StableStore.
func (db *DB) Group(gid uint64) *Store {
	return &Store{db: db, gid: gid}
}

// DeleteGroup removes every log entry and stable value of gid with two range
// tombstones in one synced batch. The group's replica must be shut down
// first; its id should never be reused (docs/design.md "D4").
func (db *DB) DeleteGroup(gid uint64) error {
	if err := db.acquire(); err != nil {
		return fmt.Errorf("logstore: delete group %d: %w", gid, err)
	}
	defer db.mu.RUnlock()
	b := db.pdb.NewBatch()
	defer b.Close()
	for _, tag := range []byte{tagLog, tagStable} {
		if err := b.DeleteRange(groupStart(tag, gid), groupEnd(tag, gid), nil); err != nil {
			return fmt.Errorf("logstore: delete group %d: %w", gid, err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("logstore: delete group %d: %w", gid, err)
	}
	return nil
}

// Groups returns, in ascending order, the ids of the groups that have any
// log entry or stable value: what a node finds on disk at boot, to restart
// its replicas or finish an interrupted removal.
func (db *DB) Groups() ([]uint64, error) {
	if err := db.acquire(); err != nil {
		return nil, fmt.Errorf("logstore: list groups: %w", err)
	}
	defer db.mu.RUnlock()
	var gids []uint64
	for _, tag := range []byte{tagLog, tagStable} {
		var err error
		if gids, err = db.appendGroups(gids, tag); err != nil {
			return nil, fmt.Errorf("logstore: list groups: %w", err)
		}
	}
	slices.Sort(gids)
	return slices.Compact(gids), nil
}

// appendGroups appends the group ids present under tag. It visits one key
// per group, seeking past the rest of each group.
func (db *DB) appendGroups(gids []uint64, tag byte) (_ []uint64, err error) {
	it, err := db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: []byte{tag},
		UpperBound: []byte{tag + 1},
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for valid := it.First(); valid; {
		k := it.Key()
		if len(k) < groupPrefixLen {
			return nil, fmt.Errorf("%w: %d-byte key %q under tag %q", ErrCorrupt, len(k), k, tag)
		}
		gid := binary.BigEndian.Uint64(k[1:groupPrefixLen])
		gids = append(gids, gid)
		if gid == ^uint64(0) {
			break
		}
		valid = it.SeekGE(groupStart(tag, gid+1))
	}
	return gids, nil
}

// Close closes the database after in-flight operations finish. Later calls
// return ErrClosed.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	db.closed = true
	db.metrics.unregister()
	if err := db.pdb.Close(); err != nil {
		return fmt.Errorf("logstore: close %s: %w", db.dir, err)
	}
	return nil
}
