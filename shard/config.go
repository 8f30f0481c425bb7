package shard

import (
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardnet/shardnet/transport"
)

// Config is what a Manager needs from the node.
type Config struct {
	DataDir   string          // the node's data dir; the manager uses DataDir/{raftlog,state,replicas}
	NodeID    string          // this node's name
	ServerID  raft.ServerID   // this node's Raft server id: node id + incarnation
	Transport *transport.Node // the node's cluster transport (shared with the meta group)
	Logger    hclog.Logger
	Registry  prometheus.Registerer // optional
	Raft      RaftTiming

	// Back-pressure per replica (docs/design.md "D12"): beyond either bound a
	// proposal is refused with ErrOverloaded instead of queueing without end.
	MaxInFlight      int
	MaxInFlightBytes int64

	// ProposalWindow is how many batches of proposals a group lets be in
	// Raft at once (batch.go); the others queue and go together. Default 1.
	ProposalWindow int

	// LeaderRebalance is how often the node hands the groups it leads
	// back to their preferred leaders (rebalance.go). Default 10 s;
	// negative turns it off.
	LeaderRebalance time.Duration

	// KeyIndexBytes bounds the memory of the channels' in-memory key
	// indexes on this node (fsm.StoreOptions.KeyIndexBytes): 0 takes
	// fsm.DefaultKeyIndexBytes, a negative value turns them off.
	KeyIndexBytes int64

	// HashCheckInterval is how often the leader of each group proposes a
	// hash check, which makes every replica hash its state so that the
	// replicas can compare (hashcheck.go). 0 takes
	// DefaultHashCheckInterval; negative turns the checks off.
	HashCheckInterval time.Duration

	// ClusterVersion, when set, returns the cluster version committed in
	// the meta group (fsm/version.go): a proposal of a command of a higher
	// version is refused with fsm.ErrUpgradePending, and no hash check is
	// proposed below version 2. nil: fsm.Version, no gate (a node outside
	// a cluster).
	ClusterVersion func() int
	// Placed, when set, reports whether the committed meta state places
	// node on channel's group gid: such a node may replicate to a replica
	// whose configuration does not name it a voter yet (GroupSetup.Placed).
	// It must not block. nil: only voters, and anyone while a replica's
	// configuration is empty.
	Placed func(gid uint64, channel, node string) bool

	// CompareHash, when set, is given each hash of a local replica's
	// state that a hash check produced; it compares it with the peers'
	// and reports with Replica.HashVerdict (the cluster layer asks the
	// peers). It is called on the goroutine that computed the hash.
	CompareHash func(r *Replica, index, hash uint64)

	// MinFreeDisk is the free space below which proposals are refused with
	// ErrDiskFull (default 256 MiB).
	MinFreeDisk uint64

	// FS, if set, is the file system of everything under DataDir: the Raft
	// log store, the state store, the replicas' records and snapshots
	// (tests only: a crashable in-memory FS cuts the power). Default: the
	// OS file system.
	FS vfs.FS

	// LogFS, if set, is the file system of the Raft log store instead of
	// FS (tests only: logstore.SlowFS slows its fsyncs).
	LogFS vfs.FS
}

// RaftTiming holds the per-group Raft settings. Defaults trade idle cost
// (docs/raft-notes.md "R7") against failover time; see shard/DESIGN.md "Timers".
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	MaxAppendEntries   int
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
}

// DefaultRaftTiming is used for every channel group unless the node says
// otherwise.
func DefaultRaftTiming() RaftTiming {
	return RaftTiming{
		// Failover does not wait for these (failover.go: the prober makes
		// one follower stand at once), so they are set for idle cost: a
		// leader heartbeats each follower every 500-1000 ms (5 s against
		// 3 s cut the CPU of 3,000 idle replicas by about a tenth,
		// docs/benchmarks.md). The lease must outlast that interval (plus
		// the transport's 20 ms heartbeat batching) or leaders step down;
		// it is also the short timeout the followers of a vanished leader
		// fall back to when no standing election (failover.go) wins.
		HeartbeatTimeout:   5000 * time.Millisecond,
		ElectionTimeout:    5000 * time.Millisecond,
		LeaderLeaseTimeout: 2000 * time.Millisecond,
		// CommitTimeout only delays when the followers of an idle group
		// learn the commit index of its last writes (busy groups carry it on
		// their next append): a stale read on a follower sees a lone write
		// 1-2 s after it was acknowledged. Each tick is an AppendEntries per
		// follower per group: at the library's 50 ms it is most of the idle
		// RPC load (docs/raft-notes.md "R7"); 250 ms cost ~20 % of a core at 3,000
		// idle replicas, 1 s a quarter of that (docs/benchmarks.md).
		CommitTimeout:     1000 * time.Millisecond,
		MaxAppendEntries:  256,
		SnapshotInterval:  60 * time.Second,
		SnapshotThreshold: 4096,
		TrailingLogs:      2048,
	}
}

func (t RaftTiming) withDefaults() RaftTiming { return t.Or(DefaultRaftTiming()) }

// Or returns t with each zero field taken from d.
func (t RaftTiming) Or(d RaftTiming) RaftTiming {
	or := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	orN := func(v *uint64, def uint64) {
		if *v == 0 {
			*v = def
		}
	}
	or(&t.HeartbeatTimeout, d.HeartbeatTimeout)
	or(&t.ElectionTimeout, d.ElectionTimeout)
	or(&t.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	or(&t.CommitTimeout, d.CommitTimeout)
	or(&t.SnapshotInterval, d.SnapshotInterval)
	orN(&t.SnapshotThreshold, d.SnapshotThreshold)
	orN(&t.TrailingLogs, d.TrailingLogs)
	if t.MaxAppendEntries == 0 {
		t.MaxAppendEntries = d.MaxAppendEntries
	}
	return t
}

// RaftConfig builds a hashicorp/raft config for one group of this node.
func (t RaftTiming) RaftConfig(id raft.ServerID, logger hclog.Logger) *raft.Config {
	t = t.withDefaults()
	c := raft.DefaultConfig()
	c.LocalID = id
	c.Logger = logger
	c.HeartbeatTimeout = t.HeartbeatTimeout
	c.ElectionTimeout = t.ElectionTimeout
	c.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	c.CommitTimeout = t.CommitTimeout
	c.MaxAppendEntries = t.MaxAppendEntries
	c.SnapshotInterval = t.SnapshotInterval
	c.SnapshotThreshold = t.SnapshotThreshold
	c.TrailingLogs = t.TrailingLogs
	c.BatchApplyCh = true
	// The FSM persists its applied index with its data (docs/raft-notes.md "R1").
	c.NoSnapshotRestoreOnStart = true
	c.NoLegacyTelemetry = true
	return c
}

// ServerIDFor joins a node id and its incarnation into a Raft server id that
// is never reused after a wiped disk (docs/raft-notes.md "R6").
func ServerIDFor(nodeID, incarnation string) raft.ServerID {
	return raft.ServerID(nodeID + "@" + incarnation)
}

// NodeOf returns the node id part of a Raft server id (the transport
// holds the convention: it checks that a server id belongs to the node that
// sent it).
func NodeOf(id raft.ServerID) string { return transport.NodeOf(id) }
