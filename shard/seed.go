package shard

import (
	"bytes"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// Seeding a new group from a snapshot: how a channel restored from a
// backup starts (docs/operations.md "Backup and restore"). Instead of
// bootstrapping, the first replica starts from a raft snapshot written into
// its snapshot store at the backup's index, which carries the group's
// configuration: raft then knows its voters without a bootstrap entry, the
// state machine is loaded from it (restoreIfBehind), and the log continues
// after that index, so the channel never hands out an index at or below
// one it restored. The other replicas start empty (no Peers): an empty
// hashicorp/raft replica starts no election ("no known peers"), grants its
// vote to a candidate whose log is ahead of its own, and answers the
// leader's first AppendEntries with a mismatch, after which the leader
// sends it the snapshot (InstallSnapshot).

// Seed is the state a seeded replica starts from.
type Seed struct {
	// Index is the snapshot's index: the applied index in State's header.
	Index uint64
	// Term is the raft term the snapshot is recorded under. The new
	// group's first election runs in term 1 (its stable store is empty),
	// so a term above 1 would put entries of a lower term after the
	// snapshot's: callers pass 1.
	Term uint64
	// Servers is the group's configuration: its voters.
	Servers []raft.Server
	// State is a channel snapshot stream (fsm/snapshot.go) at Index.
	State io.Reader
}

// Seed starts the replica of a group that has no state on this node from
// seed instead of a bootstrap. A replica that already runs is returned as
// it is; one with state on disk is refused. The snapshot is streamed into
// the replica's snapshot store before the replica starts, without holding
// the manager's lock. A seed interrupted by a crash leaves a replica dir
// without replica.json, which the next Open removes.
func (m *Manager) Seed(spec ReplicaSpec, seed Seed) (*Replica, error) {
	gid := spec.GroupID
	if gid == 0 || seed.Index == 0 || len(seed.Servers) == 0 {
		return nil, fmt.Errorf("shard: seed replica %d: group, index and servers are required", gid)
	}
	var hdr [28]byte
	if _, err := io.ReadFull(seed.State, hdr[:]); err != nil {
		return nil, fmt.Errorf("shard: seed replica %d: read snapshot header: %w", gid, err)
	}
	if idx, err := fsm.SnapshotStreamIndex(hdr[:]); err != nil || idx != seed.Index {
		return nil, fmt.Errorf("shard: seed replica %d: the snapshot is at index %d, not %d (%v)", gid, idx, seed.Index, err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrStopped
	}
	if r, ok := m.replicas[gid]; ok {
		m.mu.Unlock()
		return r, nil
	}
	if _, ok := m.records[gid]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("shard: seed replica %d: it has Raft state already", gid)
	}
	// Whatever an interrupted seed left in this process.
	err := m.purge(gid)
	if err == nil {
		err = mkdirAllSync(m.fs, m.replicaDir(gid))
	}
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("shard: seed replica %d: %w", gid, err)
	}
	snaps, err := newSnapStore(m.fs, m.replicaDir(gid), 1, m.log.With("group", gid))
	if err != nil {
		return nil, fmt.Errorf("shard: seed replica %d: %w", gid, err)
	}
	sink, err := snaps.Create(1, seed.Index, seed.Term, raft.Configuration{Servers: seed.Servers}, seed.Index, nil)
	if err != nil {
		return nil, fmt.Errorf("shard: seed replica %d: %w", gid, err)
	}
	if _, err := io.Copy(sink, io.MultiReader(bytes.NewReader(hdr[:]), seed.State)); err != nil {
		_ = sink.Cancel()
		return nil, fmt.Errorf("shard: seed replica %d: write snapshot: %w", gid, err)
	}
	if err := sink.Close(); err != nil {
		return nil, fmt.Errorf("shard: seed replica %d: write snapshot: %w", gid, err)
	}
	spec.Peers = nil
	spec.seeded = true
	r, err := m.Ensure(spec)
	if err != nil {
		// The snapshot did not load (the state machine checks its
		// checksum): start over at the next attempt.
		m.mu.Lock()
		if _, running := m.replicas[gid]; !running {
			if perr := m.purge(gid); perr != nil {
				m.log.Error("cannot remove a failed seed", "group", gid, "error", perr)
			}
		}
		m.mu.Unlock()
	}
	return r, err
}
