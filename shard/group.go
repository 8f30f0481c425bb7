package shard

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/transport"
)

// GroupSetup is what starting one Raft group of this node takes, a channel
// group (Manager) or the meta group (package cluster): both start the same
// way, so their timers, stores and transport are set up in one place.
type GroupSetup struct {
	GroupID  uint64 // the transport group; 0 is the meta group
	ServerID raft.ServerID
	Timing   RaftTiming
	Logger   hclog.Logger // raft's own logger (already Quiet, if wanted)

	FSM       raft.FSM
	Logs      raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	CacheSize int // entries of the log kept in memory (raft.NewLogCache)

	Transport *transport.Node
	// RestoreOnStart has raft restore the FSM from the newest snapshot at
	// start: for a state machine in memory. A state machine that persists
	// its applied index with its data does not want it (docs/raft-notes.md
	// "R1").
	RestoreOnStart bool
	// Bootstrap, when set and the group has no Raft state yet, is the
	// configuration the group is bootstrapped with.
	Bootstrap []raft.Server
	// BeforeStart, when set, runs after any bootstrap and before raft
	// starts: the last moment to record that the group exists, before it
	// can acknowledge an entry.
	BeforeStart func() error
	// Placed, when set, reports whether the committed meta state places
	// node on this group (a channel's placement; for the meta group, a
	// registered core node). Such a node may send the group AppendEntries
	// and InstallSnapshot though it is not a voter of the replica's latest
	// configuration, and any RPC while that configuration is empty
	// (shard/DESIGN.md "Who may send a group Raft RPCs"). Called on the RPC path,
	// only when the voter check refused: it must not block.
	Placed func(node string) bool
	// QuietHeartbeats has the group's leader send each follower a real
	// heartbeat every QuietHeartbeatEvery of its heartbeat timeout and
	// answer the ones in between itself while the group is quiet
	// (transport's "Quiet heartbeats"): for groups that are mostly idle
	// and whose failover does not wait for heartbeats (failover.go).
	QuietHeartbeats bool
}

// QuietHeartbeatEvery is the share of the heartbeat timeout after which a
// group with QuietHeartbeats sends a follower a real heartbeat: a quarter.
// Raft's next heartbeat comes a tenth to a fifth of the timeout later and
// may wait an eighth of the quarter in a batch (transport's
// quietBatchShare), so a follower hears one before half its timeout has
// run: the other half is room for a lost heartbeat or a loaded machine
// (with 40 %, the in-process test clusters' 500 ms timeouts ran out under
// the race detector on 2 busy cores, and followers stood for election).
func QuietHeartbeatEvery(heartbeatTimeout time.Duration) time.Duration {
	return heartbeatTimeout / 4
}

// Group is a started Raft group and what it was started with.
type Group struct {
	Raft  *raft.Raft
	Trans *transport.GroupTransport
	Logs  raft.LogStore // the log under raft's cache: what raft reads
	// HadState says the group had Raft state (a log, a term or a snapshot)
	// before this start; Bootstrapped that this start bootstrapped it.
	HadState, Bootstrapped bool
	// Lease is the group's leader lease: the short timer of its failover.
	Lease time.Duration
}

// StartGroup registers the group on the node transport and starts raft.
// On an error nothing is left registered; the stores stay the caller's.
func StartGroup(s GroupSetup) (*Group, error) {
	cache, err := raft.NewLogCache(s.CacheSize, s.Logs)
	if err != nil {
		return nil, fmt.Errorf("log cache: %w", err)
	}
	has, err := raft.HasExistingState(cache, s.Stable, s.Snapshots)
	if err != nil {
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	trans, err := s.Transport.Group(s.GroupID)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	fail := func(err error) (*Group, error) {
		trans.Close()
		return nil, err
	}
	// Only the group's voters may send it Raft RPCs (VoterCheck); until
	// raft runs, nobody may.
	var check atomic.Pointer[func(node string) bool]
	trans.SetVoterCheck(func(node string) bool {
		c := check.Load()
		return c != nil && (*c)(node)
	})
	conf := s.Timing.RaftConfig(s.ServerID, s.Logger)
	conf.NoSnapshotRestoreOnStart = !s.RestoreOnStart
	g := &Group{Trans: trans, Logs: cache, HadState: has, Lease: conf.LeaderLeaseTimeout}
	if s.QuietHeartbeats {
		trans.SetQuietHeartbeats(QuietHeartbeatEvery(conf.HeartbeatTimeout))
	}
	if len(s.Bootstrap) > 0 && !has {
		err := raft.BootstrapCluster(conf, cache, s.Stable, s.Snapshots, trans, raft.Configuration{Servers: s.Bootstrap})
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fail(fmt.Errorf("bootstrap: %w", err))
		}
		g.Bootstrapped = true
	}
	if s.BeforeStart != nil {
		if err := s.BeforeStart(); err != nil {
			return fail(err)
		}
	}
	g.Raft, err = raft.NewRaft(conf, s.FSM, cache, s.Stable, s.Snapshots, trans)
	if err != nil {
		return fail(fmt.Errorf("new raft: %w", err))
	}
	isVoter := VoterCheck(g.Raft, s.Placed)
	check.Store(&isVoter)
	if s.Placed != nil {
		trans.SetReplicaCheck(s.Placed)
	}
	return g, nil
}
