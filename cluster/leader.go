package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

func (n *Node) leaderPoke() chan struct{} { return n.lpoke }

// runLeaderLoop is the meta leader's control loop: it turns gossip into
// registry entries and meta group membership. Gossip is advice; only this
// loop, on the meta leader, writes node state.
func (n *Node) runLeaderLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(leaderLoopEvery)
	defer tick.Stop()
	var readyTerm uint64
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-n.lpoke:
		}
		if n.meta.raft.State() != raft.Leader {
			if readyTerm != 0 {
				n.metrics.metaMembers.Set(0)
			}
			readyTerm = 0
			continue
		}
		if term := n.meta.raft.CurrentTerm(); term != readyTerm {
			// Our FSM must reflect every committed entry before we act on it.
			if err := n.meta.raft.Barrier(5 * time.Second).Error(); err != nil {
				continue
			}
			readyTerm = term
			n.log.Info("leading the meta group", "term", term)
		}
		n.leaderStep()
	}
}

func (n *Node) leaderStep() {
	if n.metaHashDue(time.Now()) {
		_, err := n.proposeMeta(context.Background(), &fsm.MetaHashCheck{})
		switch {
		case errors.Is(err, fsm.ErrUpgradePending):
			// Older nodes would skip it: wait until every node is upgraded.
			if !n.metaHashWaitTold {
				n.log.Info("no meta hash checks until every node is upgraded", "reason", err)
				n.metaHashWaitTold = true
			}
		case err != nil:
			n.log.Debug("could not propose a meta hash check", "error", err)
		}
	}
	if n.meta.fsm.ClusterID() == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		if _, err := n.proposeMeta(context.Background(), &fsm.SetClusterID{ID: hex.EncodeToString(b[:])}); err != nil {
			n.log.Warn("set cluster id", "error", err)
			return
		}
	}
	n.registryMu.Lock() // drain.go
	defer n.registryMu.Unlock()
	members := n.gossip.snapshot()
	n.registerNodes(members, time.Now())
	n.reconcileMetaMembership(members)
	n.raiseClusterVersion()
	n.renewIncarnations()
	n.repairStep()
}

// raiseClusterVersion commits the highest version every member of the
// cluster supports (every registered node that has not left: a dead node
// may come back with its old binary), when it is above the cluster version
// (fsm/DESIGN.md "Versions: a command is proposed only once every node can
// apply it"). The version never goes down.
func (n *Node) raiseClusterVersion() {
	from := n.meta.fsm.ClusterVersion()
	to, versions := clusterVersionTarget(n.meta.fsm.Nodes(), fsm.Version)
	if to <= from {
		return
	}
	if _, err := n.proposeMeta(context.Background(), &fsm.SetClusterVersion{Version: to, Nodes: versions}); err != nil {
		n.log.Warn("raise the cluster version", "to", to, "error", err)
		return
	}
	n.log.Info("cluster version raised: every member supports it", "from", from, "to", to)
}

// clusterVersionTarget is the highest version every member among nodes
// (those that have not left) supports, at most own (this binary's), and
// the version of every node, left ones too: SetClusterVersion writes them
// all, so that no record differs between replicas afterwards.
func clusterVersionTarget(nodes []fsm.NodeRecord, own int) (int, map[string]int) {
	versions := map[string]int{}
	for _, nd := range nodes {
		versions[nd.ID] = nd.SupportedVersion()
		if nd.State != fsm.NodeLeft {
			own = min(own, nd.SupportedVersion())
		}
	}
	return own, versions
}

func gossipState(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return fsm.NodeAlive
	case memberlist.StateSuspect:
		return fsm.NodeSuspect
	case memberlist.StateLeft:
		return fsm.NodeLeft
	default:
		return fsm.NodeDead
	}
}

// reconcileMetaMembership adds every live node to the meta group as a
// non-voter and promotes core nodes once caught up, up to five voters
// (docs/raft-notes.md "R6": AddVoter has no catch-up stage of its own).
// From cluster version 5 (metaWatchVersion) resource nodes follow the meta
// state by watch instead (metafollow.go): they are not added, and those a
// previous version added are removed, one a step.
func (n *Node) reconcileMetaMembership(members []member) {
	f := n.meta.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	n.metrics.metaMembers.Set(float64(len(f.Configuration().Servers)))
	watchOn := n.meta.fsm.ClusterVersion() >= metaWatchVersion
	if watchOn {
		for _, s := range f.Configuration().Servers {
			if nd, ok := n.meta.fsm.Node(shard.NodeOf(s.ID)); !ok || nd.Role != fsm.RoleResource || s.Suffrage == raft.Voter {
				continue
			}
			if err := n.meta.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("remove a resource node from the meta group", "server", s.ID, "error", err)
			} else {
				n.log.Info("resource node removed from the meta group: it follows the meta state by watch", "server", s.ID)
			}
			return // one change at a time
		}
	}
	servers := map[raft.ServerID]raft.ServerSuffrage{}
	voters := 0
	for _, s := range f.Configuration().Servers {
		servers[s.ID] = s.Suffrage
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	commit := n.meta.raft.CommitIndex()
	for _, m := range members {
		sid := raft.ServerID(m.meta.ServerID)
		addr := raft.ServerAddress(m.meta.ClusterAddr)
		suffrage, in := servers[sid]
		if n.isFenced(sid) {
			continue // removed by a meta recovery: never back (metafence.go)
		}
		switch {
		case m.state == memberlist.StateLeft && in:
			if err := n.meta.raft.RemoveServer(sid, 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("remove left node from meta group", "node", m.meta.ID, "error", err)
			}
			return
		case m.state != memberlist.StateAlive:
			continue
		case watchOn && m.meta.Role == fsm.RoleResource:
			continue // it follows by watch
		case !in:
			// A wiped disk comes back with a new incarnation: retire the old id.
			for id := range servers {
				if shard.NodeOf(id) == m.meta.ID && id != sid {
					if err := n.meta.raft.RemoveServer(id, 0, 5*time.Second).Error(); err != nil {
						n.log.Warn("remove old incarnation", "server", id, "error", err)
						return
					}
				}
			}
			if err := n.meta.raft.AddNonvoter(sid, addr, 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("add node to meta group", "node", m.meta.ID, "error", err)
			}
			return // one change at a time
		case suffrage == raft.Nonvoter && m.meta.Role == fsm.RoleCore && voters < maxMetaVoters && m.meta.MetaIndex+8 >= commit:
			if err := n.meta.raft.AddVoter(sid, addr, 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("promote meta voter", "node", m.meta.ID, "error", err)
			} else {
				n.log.Info("meta voter added", "node", m.meta.ID)
			}
			return
		}
	}
}

// proposeMeta commits a meta command on this node, which must lead the meta
// group.
//
// A command of a version above the cluster version is refused with
// fsm.ErrUpgradePending, nothing proposed; SetClusterVersion, which raises
// it, is not.
func (n *Node) proposeMeta(ctx context.Context, cmd fsm.MetaCommand) (*fsm.MetaResult, error) {
	if _, raise := cmd.(*fsm.SetClusterVersion); !raise {
		if err := fsm.CheckVersion(fsm.MetaVersion(cmd), n.meta.fsm.ClusterVersion()); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	b, err := fsm.EncodeMeta(cmd)
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	fut := n.meta.raft.Apply(b, timeout)
	for try := 1; errors.Is(fut.Error(), raft.ErrLeadershipTransferInProgress) && try <= 3; try++ {
		// Refused, not appended: this node is handing the meta leadership
		// over (shutdown). Point at the new leader once there is one;
		// send again if the hand-over failed.
		n.waitFor(ctx, 5*time.Millisecond, func() bool { return n.meta.raft.State() != raft.Leader })
		if n.meta.raft.State() != raft.Leader {
			return nil, n.metaRedirect()
		}
		fut = n.meta.raft.Apply(b, timeout)
	}
	if err := fut.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, n.metaRedirect()
		}
		if errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, ErrNoMetaLeader // not appended: safe to retry
		}
		return nil, fmt.Errorf("%w: meta: %v", shard.ErrOutcomeUnknown, err)
	}
	res, ok := fut.Response().(*fsm.MetaResult)
	if !ok {
		return nil, fmt.Errorf("cluster: unexpected meta response %T", fut.Response())
	}
	return res, nil
}

// metaRedirect points at the meta leader, or says there is none.
func (n *Node) metaRedirect() error {
	addr, id := n.metaLeader()
	if id == "" {
		return ErrNoMetaLeader
	}
	return &shard.RedirectError{Err: ErrNotMetaLeader, NodeID: shard.NodeOf(id), Addr: string(addr)}
}
