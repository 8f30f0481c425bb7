package logstore

import (
	"sync/atomic"
	"time"
)

// syncPace decides pebble's WALMinSyncInterval after each WAL sync: how long
// the next sync waits so that more groups' appends share it.
//
// Group commit alone merges only the appends that arrive while a sync is in
// progress. With many busy groups on a node that is too few: each group has
// a few writes in flight, its Raft batches are small, and every batch pays
// its own fdatasync, which on this project's disk costs as much CPU as the
// rest of the write. Measured in process (BenchmarkPut16Channels, 64 clients
// over 16 channels, 2 vCPU): 507 µs per write without a pause, 310 µs with
// 250 µs. A fixed pause costs a lone writer the same 250 µs on every write
// (BenchmarkPutSequential 0.89 → 1.06 ms) and a closed loop of one writer
// per group 80 % (docs/raft-notes.md "R10"), so the pause applies only when another
// append is already waiting for the next sync: then a sync right away would
// serve it alone, and a short wait lets the others join.
type syncPace struct {
	inflight atomic.Int64  // StoreLogs calls between their commit and its sync
	syncs    atomic.Uint64 // WAL syncs so far: interval runs once after each
}

// syncPause is the pause between syncs while appends queue up.
const syncPause = 250 * time.Microsecond

func (p *syncPace) begin() { p.inflight.Add(1) }
func (p *syncPace) end()   { p.inflight.Add(-1) }

// interval is called by pebble right after a sync. The appends that sync
// covered may not have returned yet, so one in flight is counted as none.
func (p *syncPace) interval() time.Duration {
	p.syncs.Add(1)
	if p.inflight.Load() >= 2 {
		return syncPause
	}
	return 0
}
