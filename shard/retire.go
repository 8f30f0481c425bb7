package shard

import (
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// Retire stops the replica of group gid for a quorum-loss recovery
// (docs/operations.md "Recovering a channel that lost a quorum") and writes
// its state into w as a channel snapshot stream: first every entry of its
// log that its state machine has not applied is applied, committed or not,
// as hashicorp/raft's RecoverCluster does (the uncommitted tail becomes
// part of the state). It returns the stream's index (the state machine's
// applied index then) and the term of the last entry. The replica does not
// run again; its data stays on disk until Remove.
func (m *Manager) Retire(gid uint64, w io.Writer) (index, term uint64, err error) {
	m.mu.Lock()
	r, ok := m.replicas[gid]
	if ok {
		delete(m.replicas, gid)
		m.metrics.replicas.Set(float64(len(m.replicas)))
	}
	m.mu.Unlock()
	if !ok {
		return 0, 0, fmt.Errorf("%w: group %d", ErrNotHosted, gid)
	}
	r.stopped.Store(true)
	r.trans.Close()
	if err := r.raft.Shutdown().Error(); err != nil {
		m.log.Warn("raft shutdown", "group", gid, "error", err)
	}
	r.doneOnce.Do(func() { close(r.done) })
	defer r.fsm.Close()

	last, err := r.logs.LastIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("shard: retire %d: %w", gid, err)
	}
	var batch []*raft.Log
	for i := r.fsm.Applied() + 1; i <= last && i > 0; i++ {
		l := new(raft.Log)
		if err := r.logs.GetLog(i, l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue // compacted into the snapshot the state machine holds
			}
			return 0, 0, fmt.Errorf("shard: retire %d: entry %d: %w", gid, i, err)
		}
		term = l.Term
		// What raft hands a batching state machine.
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			batch = append(batch, l)
		}
	}
	if len(batch) > 0 {
		r.fsm.ApplyBatch(batch)
	}
	snap, err := r.fsm.Snapshot()
	if err != nil {
		return 0, 0, fmt.Errorf("shard: retire %d: %w", gid, err)
	}
	defer snap.Release()
	if err := snap.Persist(&streamSink{w: w}); err != nil {
		return 0, 0, fmt.Errorf("shard: retire %d: %w", gid, err)
	}
	m.log.Warn("replica retired for a quorum-loss recovery", "group", gid, "channel", r.Channel,
		"applied", r.fsm.Applied(), "last_index", last, "tail_applied", len(batch))
	return r.fsm.Applied(), term, nil
}

// streamSink is a raft.SnapshotSink over a writer.
type streamSink struct{ w io.Writer }

func (s *streamSink) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *streamSink) Close() error                { return nil }
func (s *streamSink) Cancel() error               { return nil }
func (s *streamSink) ID() string                  { return "retire" }
