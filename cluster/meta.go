package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
	"github.com/shardnet/shardnet/transport"
)

// metaGroupID is the transport group of the meta Raft group; channel groups
// start at 1.
const metaGroupID = 0

// metaGroup is this node's member of the meta Raft group. Core nodes are
// voters (up to five), or non-voters, so each holds a committed copy of the
// registry and placements that its reconciler reads locally (see
// cluster/DESIGN.md "The meta group": the meta log carries control-plane
// changes only). Resource nodes were non-voters too; from cluster version 5
// they follow the meta state by watch on a core node instead
// (metafollow.go), and their meta Raft stays idle.
type metaGroup struct {
	raft     *raft.Raft
	fsm      *fsm.Meta
	store    *raftboltdb.BoltStore
	trans    *transport.GroupTransport
	logs     raft.LogStore // the meta log, under raft's LogCache
	hadState bool
	lease    time.Duration // its leader lease: the short timers of its failover
	metaReadState
}

// MetaRaftTiming is the meta group's Raft timing where cluster.Config.MetaRaft
// leaves a field zero. One group costs nothing idle, so its timers are short
// (a leader heartbeats its followers every 100-200 ms): the meta group
// elects within 1-2 s of losing its leader even when the peer prober does
// not see the loss, and the prober's short timers (the 500 ms lease, which
// raft allows no timer to undercut) take effect. Under the channel groups'
// idle-cost timers they were refused (a 500 ms timer against a 1 s lease)
// and the meta group waited out a 3-6 s heartbeat timeout.
func MetaRaftTiming() shard.RaftTiming {
	return shard.RaftTiming{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotThreshold:  1024,
		TrailingLogs:       1024,
	}
}

// metaTiming fills the zero fields of t from MetaRaftTiming (the rest then
// come from the channel defaults, in RaftConfig).
func metaTiming(t shard.RaftTiming) shard.RaftTiming { return t.Or(MetaRaftTiming()) }

func openMeta(n *Node) (*metaGroup, error) {
	dir := filepath.Join(n.cfg.DataDir, "meta")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: create meta dir: %w", err)
	}
	store, err := openMetaLog(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("cluster: open meta log: %w", err)
	}
	logger := shard.Quiet(n.log.Named("meta").Named("raft"))
	snaps, err := shard.NewSnapshotStore(vfs.Default, dir, 2, logger)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster: meta snapshots: %w", err)
	}
	m := &metaGroup{fsm: n.metaFSM, store: store}
	m.fsm.SetOnHash(n.compareMetaHash)
	g, err := shard.StartGroup(shard.GroupSetup{
		GroupID: metaGroupID, ServerID: n.serverID, Timing: metaTiming(n.cfg.MetaRaft), Logger: logger,
		FSM: &raftMetaFSM{f: &n.follow, m: m.fsm}, Logs: store, Stable: store, Snapshots: snaps, CacheSize: 256,
		Transport: n.trans,
		Placed:    n.metaPlaced,
		// The meta FSM lives in memory: it must be rebuilt from the snapshot.
		RestoreOnStart: true,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster: start meta group: %w", err)
	}
	m.raft, m.trans, m.logs, m.hadState, m.lease = g.Raft, g.Trans, g.Logs, g.HadState, g.Lease
	return m, nil
}

// openMetaLog opens the meta group's log and stable store. bolt fdatasyncs
// every commit unless NoSync is set, and raft needs each StoreLogs, Set and
// DeleteRange on disk when it returns (shard/DESIGN.md "What is synced, and
// why"); TestMetaLogSyncsEveryWrite counts the syncs.
func openMetaLog(path string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{Path: path, NoSync: false})
}

func (m *metaGroup) shutdown() error {
	m.trans.Close() // first: it ends replication waits raft's Shutdown would wait for
	err := m.raft.Shutdown().Error()
	return errors.Join(err, m.store.Close())
}

// runMetaLoop publishes this node's view of the meta group in gossip and,
// on a core node with -bootstrap-expect and no Raft state, bootstraps the
// meta group once enough core nodes are seen (docs/design.md "D8").
func (n *Node) runMetaLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	bootstrapped := n.meta.hadState
	for {
		select {
		case <-n.stop:
			return
		case <-n.poke:
		case <-tick.C:
		case <-n.meta.fsm.Changed():
		}
		n.gossip.update(func(m *nodeMeta) {
			m.ClusterID = n.meta.fsm.ClusterID()
			m.MetaIndex = n.meta.raft.LastIndex()
			if n.follow.watching.Load() {
				m.MetaIndex = n.follow.progress.Load()
			}
			m.Fence = n.gossipFence()
		})
		n.checkFence()
		if !bootstrapped && n.cfg.BootstrapExpect > 0 {
			bootstrapped = n.tryBootstrap()
		}
		// The leader loop also watches gossip.
		select {
		case n.leaderPoke() <- struct{}{}:
		default:
		}
	}
}

// tryBootstrap bootstraps the meta group when BootstrapExpect core nodes
// are alive in gossip, none belongs to an existing cluster, and this node is
// among the BootstrapExpect lowest ids. Every such node bootstraps the same
// voter set, which hashicorp/raft allows.
func (n *Node) tryBootstrap() bool {
	var cores []member
	for _, m := range n.gossip.snapshot() {
		if m.state != memberlist.StateAlive || m.meta.Role != fsm.RoleCore {
			continue
		}
		if m.meta.ClusterID != "" || m.meta.HasState {
			// An existing cluster: its leader will add us.
			n.log.Info("found an existing meta group; not bootstrapping", "via", m.meta.ID)
			return true
		}
		cores = append(cores, m)
	}
	if len(cores) < n.cfg.BootstrapExpect {
		return false
	}
	sort.Slice(cores, func(i, j int) bool { return cores[i].meta.ID < cores[j].meta.ID })
	cores = cores[:n.cfg.BootstrapExpect]
	var servers []raft.Server
	self := false
	for _, c := range cores {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(c.meta.ServerID), Address: raft.ServerAddress(c.meta.ClusterAddr)})
		self = self || c.meta.ID == n.cfg.Name
	}
	if !self {
		return true // the others bootstrap; their leader adds us
	}
	err := n.meta.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Error("meta bootstrap failed", "error", err)
		return false
	}
	n.log.Info("bootstrapped the meta group", "voters", len(servers))
	n.gossip.update(func(m *nodeMeta) { m.HasState = true })
	return true
}

// metaPlaced is the meta group's replica check (shard.GroupSetup.Placed):
// a registered core node may replicate to this node's meta replica before
// its configuration names that node a voter. A node whose meta copy holds
// nothing yet (it joins: its first AppendEntries brings the state) takes
// any node of the cluster, as it has no other way to learn who leads.
func (n *Node) metaPlaced(node string) bool {
	if n.metaFSM.Applied() == 0 {
		return true
	}
	nd, ok := n.metaFSM.Node(node)
	return ok && nd.Role == fsm.RoleCore
}
