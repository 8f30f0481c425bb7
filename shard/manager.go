package shard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard/logstore"
)

// replicaFormat is the version of replica.json; bump it with a migration.
const replicaFormat = 1

// ReplicaSpec says which replica to run.
type ReplicaSpec struct {
	GroupID uint64
	Channel string
	// Peers is the group's initial voter set, used to bootstrap a group
	// that has no Raft state yet. Nil: join an existing group (a leader
	// adds this replica).
	Peers []raft.Server
	// MetaIndex is the meta log index that created the placement; a
	// replica is removed only by a meta state newer than it.
	MetaIndex uint64
	// seeded: the replica's snapshot store holds the group's first
	// snapshot (Seed), and it stands for election at once.
	seeded bool
}

// record is what a replica keeps on disk beside its snapshots, so a node
// can start its replicas at boot without the meta group (docs/design.md "D9").
type record struct {
	Format    int    `json:"format"`
	GroupID   uint64 `json:"group_id"`
	Channel   string `json:"channel"`
	ServerID  string `json:"server_id"`
	MetaIndex uint64 `json:"meta_index"`
}

// Manager runs every channel replica of one node.
type Manager struct {
	cfg     Config
	log     hclog.Logger
	fs      vfs.FS // everything under DataDir but the log store (Config.FS)
	logs    *logstore.DB
	state   *fsm.Store
	metrics *metrics
	disk    *diskGuard

	mu       sync.RWMutex
	replicas map[uint64]*Replica
	records  map[uint64]record
	closed   bool

	stop chan struct{} // closed by Close: the background loops end
	// rebalanceKick wakes the rebalancer (PeerUp); it holds one wake-up.
	rebalanceKick chan struct{}
	stopOnce      sync.Once
	loops         sync.WaitGroup
}

// Open opens the node's log and state databases and finishes any replica
// removal a crash interrupted. It starts no replica: call StartExisting.
func Open(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	cfg.Raft = cfg.Raft.withDefaults()
	if cfg.ProposalWindow <= 0 {
		cfg.ProposalWindow = 1
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.MaxInFlightBytes == 0 {
		cfg.MaxInFlightBytes = 64 << 20
	}
	if cfg.MinFreeDisk == 0 {
		cfg.MinFreeDisk = 256 << 20
	}
	if cfg.LeaderRebalance == 0 {
		cfg.LeaderRebalance = 10 * time.Second
	}
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.LogFS == nil {
		cfg.LogFS = cfg.FS
	}
	if cfg.HashCheckInterval == 0 {
		cfg.HashCheckInterval = DefaultHashCheckInterval
	}
	m := &Manager{
		stop:          make(chan struct{}),
		rebalanceKick: make(chan struct{}, 1),
		cfg:           cfg,
		log:           cfg.Logger,
		fs:            cfg.FS,
		metrics:       newMetrics(cfg.Registry),
		replicas:      map[uint64]*Replica{},
		records:       map[uint64]record{},
	}
	// Each directory's name must survive a power loss: pebble syncs the
	// files in its directory, not the directory's own entry in its parent.
	for _, d := range []struct {
		fs  vfs.FS
		dir string
	}{{cfg.FS, m.replicasDir()}, {cfg.LogFS, filepath.Join(cfg.DataDir, "raftlog")}, {cfg.FS, filepath.Join(cfg.DataDir, "state")}} {
		if err := mkdirAllSync(d.fs, d.dir); err != nil {
			return nil, fmt.Errorf("shard: create %s: %w", d.dir, err)
		}
	}
	logs, err := logstore.Open(filepath.Join(cfg.DataDir, "raftlog"), logstore.Options{
		Logger: cfg.Logger.Named("logstore"), Registerer: cfg.Registry, FS: cfg.LogFS,
	})
	if err != nil {
		return nil, fmt.Errorf("shard: open log store: %w", err)
	}
	state, err := fsm.OpenStore(filepath.Join(cfg.DataDir, "state"), fsm.StoreOptions{
		Logger: cfg.Logger.Named("fsm"), Registerer: cfg.Registry, KeyIndexBytes: cfg.KeyIndexBytes, FS: cfg.FS,
		OnHash: m.onHash,
	})
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("shard: open state store: %w", err)
	}
	m.logs, m.state = logs, state
	m.disk = newDiskGuard(cfg.DataDir, cfg.MinFreeDisk, cfg.Logger)
	if err := m.scan(); err != nil {
		m.Close()
		return nil, err
	}
	if cfg.LeaderRebalance > 0 && cfg.Transport != nil {
		m.loops.Add(1)
		go m.rebalanceLoop()
	}
	if cfg.HashCheckInterval > 0 {
		m.loops.Add(1)
		go m.hashCheckLoop()
	}
	return m, nil
}

func (m *Manager) replicasDir() string { return filepath.Join(m.cfg.DataDir, "replicas") }

func (m *Manager) replicaDir(gid uint64) string {
	return filepath.Join(m.replicasDir(), strconv.FormatUint(gid, 10))
}

// scan loads replica records, finishes interrupted removals, and deletes
// log or state data that belongs to no replica.
func (m *Manager) scan() error {
	names, err := m.fs.List(m.replicasDir())
	if err != nil {
		return fmt.Errorf("shard: read replicas dir: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		gid, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		dir := m.replicaDir(gid)
		if st, err := m.fs.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		if _, err := m.fs.Stat(filepath.Join(dir, "REMOVING")); err == nil {
			m.log.Info("finishing interrupted replica removal", "group", gid)
			if err := m.purge(gid); err != nil {
				return err
			}
			continue
		}
		b, err := readFile(m.fs, filepath.Join(dir, "replica.json"))
		if err != nil {
			// Created but never recorded: nothing was acknowledged from it.
			m.log.Warn("replica dir without record, removing", "group", gid, "error", err)
			if err := m.purge(gid); err != nil {
				return err
			}
			continue
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("shard: replica %d: decode replica.json: %w", gid, err)
		}
		if rec.Format != replicaFormat {
			return fmt.Errorf("shard: replica %d: unknown replica.json format %d", gid, rec.Format)
		}
		m.records[gid] = rec
	}
	groups, err := m.logs.Groups()
	if err != nil {
		return fmt.Errorf("shard: list log groups: %w", err)
	}
	for _, gid := range groups {
		if _, ok := m.records[gid]; !ok {
			m.log.Warn("raft log without replica, removing", "group", gid)
			if err := m.logs.DeleteGroup(gid); err != nil {
				return fmt.Errorf("shard: delete orphan log %d: %w", gid, err)
			}
		}
	}
	return nil
}

// StartExisting starts every replica found on disk.
func (m *Manager) StartExisting() error {
	m.mu.RLock()
	recs := make([]record, 0, len(m.records))
	for _, r := range m.records {
		recs = append(recs, r)
	}
	m.mu.RUnlock()
	sort.Slice(recs, func(i, j int) bool { return recs[i].GroupID < recs[j].GroupID })
	for _, rec := range recs {
		if _, err := m.Ensure(ReplicaSpec{GroupID: rec.GroupID, Channel: rec.Channel, MetaIndex: rec.MetaIndex}); err != nil {
			return err
		}
	}
	return nil
}

// Ensure starts the replica if it is not running, bootstrapping the group
// when spec.Peers is set and the replica has no Raft state.
func (m *Manager) Ensure(spec ReplicaSpec) (*Replica, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrStopped
	}
	if r, ok := m.replicas[spec.GroupID]; ok {
		return r, nil
	}
	r, err := m.start(spec)
	if err != nil {
		return nil, fmt.Errorf("shard: start replica %d (%s): %w", spec.GroupID, spec.Channel, err)
	}
	m.replicas[spec.GroupID] = r
	m.metrics.replicas.Set(float64(len(m.replicas)))
	return r, nil
}

// logCacheSize is the entries of a group's log raft keeps in memory: a
// ring of pointers, 8 bytes an entry whether used or not. As many as one
// full append (MaxAppendEntries): a follower replicates from the entries
// written moments before, and one further behind reads the log store. The
// ring of 512 it replaces cost 2 KiB more per replica, idle or not
// (docs/benchmarks.md "Idle channels, real agents").
const logCacheSize = 256

func (m *Manager) start(spec ReplicaSpec) (*Replica, error) {
	gid := spec.GroupID
	if gid == 0 {
		return nil, errors.New("group id 0 is reserved for the meta group")
	}
	dir := m.replicaDir(gid)
	rec, known := m.records[gid]
	if !known {
		// replica.json is written only once the group is bootstrapped (below):
		// a crash before that leaves a dir without a record, or a log without
		// a replica, and scan() removes both, so the reconciler starts over.
		rec = record{Format: replicaFormat, GroupID: gid, Channel: spec.Channel,
			ServerID: string(m.cfg.ServerID), MetaIndex: spec.MetaIndex}
		if err := mkdirAllSync(m.fs, dir); err != nil {
			return nil, err
		}
	}
	logger := Quiet(m.log.Named("raft").With("channel", rec.Channel, "group", gid))
	snaps, err := newSnapStore(m.fs, dir, 1, logger)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	ch, err := m.state.Channel(gid)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	fail := func(err error) (*Replica, error) {
		ch.Close()
		return nil, err
	}
	if err := restoreIfBehind(ch, snaps); err != nil {
		return fail(err)
	}
	corrupt, err := loadCorrupt(m.fs, dir)
	if err != nil {
		return fail(err)
	}
	store := m.logs.Group(gid)
	g, err := StartGroup(GroupSetup{
		GroupID: gid, ServerID: raft.ServerID(rec.ServerID), Timing: m.cfg.Raft, Logger: logger,
		FSM: ch, Logs: store, Stable: store, Snapshots: snaps, CacheSize: logCacheSize,
		Transport: m.cfg.Transport, Bootstrap: spec.Peers, Placed: m.placed(gid, rec.Channel),
		QuietHeartbeats: true,
		BeforeStart: func() error {
			if known {
				return nil
			}
			if err := writeFileSync(m.fs, filepath.Join(dir, "replica.json"), rec); err != nil {
				return err
			}
			m.records[gid] = rec
			return nil
		},
	})
	if err != nil {
		return fail(err)
	}
	r := &Replica{GroupID: gid, Channel: rec.Channel, serverID: raft.ServerID(rec.ServerID),
		raft: g.Raft, fsm: ch, logs: store, trans: g.Trans, snaps: snaps, m: m, done: make(chan struct{}),
		bootstrapped: g.Bootstrapped}
	r.batch = batcher{r: r, window: m.cfg.ProposalWindow}
	if corrupt != nil {
		r.corrupt.Store(corrupt)
		m.log.Error("this replica was marked corrupt by a hash check; it serves no reads until repaired",
			"channel", rec.Channel, "group", gid, "index", corrupt.Index)
	}
	r.electionAtStart(g.Bootstrapped || spec.seeded, spec.seeded || len(spec.Peers) > 0 && spec.Peers[0].ID == raft.ServerID(rec.ServerID))
	return r, nil
}

// restoreIfBehind restores the FSM from the newest snapshot when the FSM's
// persisted state is older than it: raft will not replay entries the
// snapshot covers (docs/raft-notes.md "R1").
func restoreIfBehind(ch *fsm.Channel, snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	if ch.Applied() >= list[0].Index {
		return nil
	}
	_, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	if err := ch.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", list[0].ID, err)
	}
	return nil
}

// Replica returns the running replica of a group.
func (m *Manager) Replica(gid uint64) (*Replica, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.replicas[gid]
	return r, ok
}

// Replicas returns every running replica, by group id.
func (m *Manager) Replicas() []*Replica {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Replica, 0, len(m.replicas))
	for _, r := range m.replicas {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GroupID < out[j].GroupID })
	return out
}

// ReplicaByChannel returns the running replica of a channel by name (the
// newest group if a deleted channel's replica is still being removed).
func (m *Manager) ReplicaByChannel(name string) (*Replica, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var best *Replica
	for _, r := range m.replicas {
		if r.Channel == name && (best == nil || r.GroupID > best.GroupID) {
			best = r
		}
	}
	return best, best != nil
}

// MetaIndex returns the meta index recorded for a local replica.
func (m *Manager) MetaIndex(gid uint64) (uint64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	rec, ok := m.records[gid]
	return rec.MetaIndex, ok
}

// Remove stops a replica and deletes all of its data: a durable tombstone
// first, so a crash halfway is finished at the next boot (docs/design.md "D9").
func (m *Manager) Remove(gid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.records[gid]; !ok {
		return nil
	}
	dir := m.replicaDir(gid)
	if err := writeFileSync(m.fs, filepath.Join(dir, "REMOVING"), struct{}{}); err != nil {
		return fmt.Errorf("shard: tombstone replica %d: %w", gid, err)
	}
	if r, ok := m.replicas[gid]; ok {
		r.stop()
		delete(m.replicas, gid)
		m.metrics.replicas.Set(float64(len(m.replicas)))
	}
	return m.purge(gid)
}

func (m *Manager) purge(gid uint64) error {
	if err := m.state.DeleteChannel(gid); err != nil {
		return fmt.Errorf("shard: delete state of %d: %w", gid, err)
	}
	if err := m.logs.DeleteGroup(gid); err != nil {
		return fmt.Errorf("shard: delete log of %d: %w", gid, err)
	}
	if err := m.fs.RemoveAll(m.replicaDir(gid)); err != nil {
		return fmt.Errorf("shard: delete replica dir %d: %w", gid, err)
	}
	if err := syncDir(m.fs, m.replicasDir()); err != nil {
		return fmt.Errorf("shard: delete replica dir %d: %w", gid, err)
	}
	delete(m.records, gid)
	return nil
}

func (r *Replica) stop() {
	r.stopped.Store(true)
	// The transport first: raft's Shutdown waits for its replication
	// goroutines, and one may be waiting in the transport for a peer that is
	// down (transport: replication waits); closing ends that wait.
	r.trans.Close()
	if err := r.raft.Shutdown().Error(); err != nil {
		r.m.log.Warn("raft shutdown", "group", r.GroupID, "error", err)
	}
	r.doneOnce.Do(func() { close(r.done) })
	r.fsm.Close()
}

// Close stops every replica, leaders first handing leadership to a follower
// so the group does not wait an election timeout, then closes the databases.
// The hand-overs happen while the replicas still serve: a request that
// arrives meanwhile is answered or redirected to the new leader, not refused.
func (m *Manager) Close() error {
	m.stopOnce.Do(func() { close(m.stop) })
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, r := range m.Replicas() {
		if r.raft.State() != raft.Leader {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(r *Replica) {
			defer wg.Done()
			defer func() { <-sem }()
			f := r.raft.LeadershipTransfer()
			done := make(chan struct{})
			go func() { _ = f.Error(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
		}(r)
	}
	wg.Wait()

	m.mu.Lock()
	m.closed = true
	reps := make([]*Replica, 0, len(m.replicas))
	for _, r := range m.replicas {
		reps = append(reps, r)
	}
	m.replicas = map[uint64]*Replica{}
	m.mu.Unlock()
	for _, r := range reps {
		wg.Add(1)
		sem <- struct{}{}
		go func(r *Replica) {
			defer wg.Done()
			defer func() { <-sem }()
			r.stop()
		}(r)
	}
	wg.Wait()
	m.loops.Wait() // a rebalance pass ends once its replicas stopped
	var errs []error
	if m.disk != nil {
		m.disk.close()
	}
	if m.state != nil {
		errs = append(errs, m.state.Close())
	}
	if m.logs != nil {
		errs = append(errs, m.logs.Close())
	}
	return errors.Join(errs...)
}

// Kill stops every replica without handing over leadership, as a crash
// would, but still closes files (tests use it to simulate a hard stop).
func (m *Manager) Kill() error {
	m.stopOnce.Do(func() { close(m.stop) })
	m.mu.Lock()
	m.closed = true
	reps := m.replicas
	m.replicas = map[uint64]*Replica{}
	m.mu.Unlock()
	for _, r := range reps {
		r.stop()
	}
	m.loops.Wait()
	m.disk.close()
	return errors.Join(m.state.Close(), m.logs.Close())
}

// writeFileSync writes v as JSON to path atomically and durably: a
// synced temporary file renamed into place, then the directory synced.
func writeFileSync(fs vfs.FS, path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := writeSynced(fs, tmp, b); err != nil {
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(fs, filepath.Dir(path))
}

func readFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// placed is the replica check of channel's group gid (Config.Placed).
func (m *Manager) placed(gid uint64, channel string) func(node string) bool {
	if m.cfg.Placed == nil {
		return nil
	}
	return func(node string) bool { return m.cfg.Placed(gid, channel, node) }
}
