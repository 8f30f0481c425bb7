package cluster

import (
	"context"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shardnet/shardnet/fsm"
)

// The node registry, the meta leader's half (cluster/DESIGN.md "The node
// registry"). Gossip is advice: each node publishes what it is (role, zone,
// operator, -serve-data, capacity, usage) and memberlist says whether it
// answers. The meta leader turns that into registry records, and decides
// the state:
//
//	alive     gossip says alive (draining stays draining: an operator's
//	          decision, or the drain's, that gossip does not undo)
//	suspect   gossip says suspect or dead, or has not heard of a registered
//	          node, for less than -dead-after as this leader saw it
//	dead      absent for -dead-after on this leader's clock, continuously;
//	          it is alive again as soon as gossip says so
//	draining  kept while the node is alive or suspect; absent for
//	          -dead-after, it is dead like any other
//	left      the node announced it leaves the cluster (node leave,
//	          drain.go: nodeMeta.Leaving); a graceful shutdown is absence
//
// The FSM never reads a clock: the leader measures the absence on its own
// clock and proposes the state. A new meta leader starts every timer
// again: a meta leader change delays dead by up to -dead-after, never
// hastens it.
//
// Disk figures change all the time; a meta write for each would make the
// registry the busiest thing in the meta log. A figure is written (and
// published in gossip by the node) only when it moved by at least
// diskStep (1 % of the disk offered, at least 64 MiB, at most 1 GiB), when
// it goes to or from zero, or when free space crosses the allocator's
// reserve (freeReserve); a change of anything else (state, addresses,
// role, zone, operator, -serve-data, max replicas) is written at once.

// registry is the meta leader's memory of who is absent since when; the
// leader loop's alone.
type registry struct {
	term   uint64               // the meta term this memory belongs to
	since  time.Time            // when this leader's term began, on its clock
	absent map[string]time.Time // node id: first seen absent in this term
}

// missingGrace is how long a new meta leader waits before it counts a
// registered node that its gossip has not heard of at all as absent: its
// gossip may still be learning the members.
const missingGrace = 5 * time.Second

// registerNodes writes the registry from gossip (leader loop, on the meta
// leader). It stops at the first proposal that fails; the next step tries
// again.
func (n *Node) registerNodes(members []member, now time.Time) {
	if term := n.meta.raft.CurrentTerm(); n.reg.term != term || n.reg.absent == nil {
		n.reg = registry{term: term, since: now, absent: map[string]time.Time{}}
	}
	full := n.meta.fsm.ClusterVersion() >= 4
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		seen[m.meta.ID] = true
		have, ok := n.meta.fsm.Node(m.meta.ID)
		if !ok && m.state != memberlist.StateAlive {
			// Only a live node is registered: gossip remembers the
			// dead, and a node removed from the registry (node remove)
			// must not come back from that memory.
			continue
		}
		want := recordOf(m, full)
		want.State = n.reg.decide(m.meta.ID, have, ok, gossipState(m.state), now, n.cfg.DeadAfter)
		if ok {
			want.CreateIndex, want.ModifyIndex = have.CreateIndex, have.ModifyIndex
			if !registryDiffers(have, want) {
				if have.State != want.State && !n.setNodeState(have, want.State) {
					return
				}
				continue
			}
		}
		if _, err := n.proposeMeta(context.Background(), &fsm.UpsertNode{Node: want}); err != nil {
			n.log.Warn("register node", "node", m.meta.ID, "error", err)
			return
		}
		if !ok {
			n.log.Info("node registered", "node", want.ID, "role", want.Role, "zone", want.Zone, "operator", want.Operator, "state", want.State)
		} else if have.State != want.State {
			n.log.Info("node state changed", "node", want.ID, "from", have.State, "to", want.State)
		}
	}
	// Registered nodes this leader's gossip has not heard of (it started
	// after they stopped, or memberlist forgot them) are absent too.
	if now.Sub(n.reg.since) < missingGrace {
		return
	}
	for _, nd := range n.meta.fsm.Nodes() {
		if seen[nd.ID] || nd.State == fsm.NodeLeft {
			continue
		}
		if state := n.reg.decide(nd.ID, nd, true, fsm.NodeDead, now, n.cfg.DeadAfter); state != nd.State && !n.setNodeState(nd, state) {
			return
		}
	}
}

// setNodeState proposes a state change alone; false if it failed.
func (n *Node) setNodeState(have fsm.NodeRecord, state string) bool {
	if _, err := n.proposeMeta(context.Background(), &fsm.SetNodeState{ID: have.ID, State: state}); err != nil {
		n.log.Warn("set node state", "node", have.ID, "to", state, "error", err)
		return false
	}
	n.log.Info("node state changed", "node", have.ID, "from", have.State, "to", state)
	return true
}

// decide is the registry state of node id, given its record (ok: it has
// one), what gossip says and this leader's clock.
func (r *registry) decide(id string, have fsm.NodeRecord, ok bool, gossip string, now time.Time, deadAfter time.Duration) string {
	switch gossip {
	case fsm.NodeAlive:
		delete(r.absent, id)
		if ok && have.State == fsm.NodeDraining {
			return fsm.NodeDraining
		}
		return fsm.NodeAlive
	case fsm.NodeLeft:
		delete(r.absent, id)
		return fsm.NodeLeft
	}
	first, seen := r.absent[id]
	if !seen {
		r.absent[id], first = now, now
	}
	switch {
	case ok && (have.State == fsm.NodeDead || have.State == fsm.NodeLeft):
		return have.State // a decision taken: only gossip's alive undoes it
	case now.Sub(first) >= deadAfter:
		return fsm.NodeDead
	case ok && have.State == fsm.NodeDraining:
		return fsm.NodeDraining
	}
	return fsm.NodeSuspect
}

// recordOf is the registry record gossip describes, without its state.
// Below cluster version 4 it leaves out the fields version 4 added: an
// older node would apply the entry without them, and the replicas of the
// meta state would differ (the meta hash check would say so).
func recordOf(m member, full bool) fsm.NodeRecord {
	rec := fsm.NodeRecord{
		ID: m.meta.ID, ServerID: m.meta.ServerID, Role: m.meta.Role, Zone: m.meta.Zone,
		ClusterAddr: m.meta.ClusterAddr, HTTPAddr: m.meta.HTTPAddr, GossipAddr: m.gossipAddr,
		DiskBytes: m.meta.DiskBytes, MaxReplicas: m.meta.MaxReplicas, Stake: m.meta.Stake,
		Version: m.meta.Version,
	}
	if full {
		rec.Reported = true
		rec.Operator, rec.ServeData = m.meta.Operator, m.meta.ServeData
		rec.DiskFree, rec.DataBytes = m.meta.DiskFree, m.meta.DataBytes
	}
	return rec
}

// registryDiffers reports whether want differs from have by more than the
// disk figures' noise (and the state, which setNodeState writes alone).
func registryDiffers(have, want fsm.NodeRecord) bool {
	if !diskMoved(have.DiskBytes, want.DiskBytes, want.DiskBytes) {
		want.DiskBytes = have.DiskBytes
	}
	if !diskMoved(have.DataBytes, want.DataBytes, want.DiskBytes) {
		want.DataBytes = have.DataBytes
	}
	if !freeMoved(have.DiskFree, want.DiskFree, want.DiskBytes) {
		want.DiskFree = have.DiskFree
	}
	want.State = have.State
	return have != want
}

// diskStep is the least change of a disk figure worth a write.
func diskStep(offered uint64) uint64 {
	return min(max(offered/100, 64<<20), 1<<30)
}

// diskMoved reports whether a disk figure changed enough to be written.
func diskMoved(old, now, offered uint64) bool {
	if (old == 0) != (now == 0) {
		return true
	}
	d := max(old, now) - min(old, now)
	return d >= diskStep(offered)
}

// freeMoved is diskMoved for free space, which is also written when it
// crosses the allocator's reserve: that decides where replicas go.
func freeMoved(old, now, offered uint64) bool {
	reserve := freeReserve(&fsm.NodeRecord{DiskBytes: offered})
	return diskMoved(old, now, offered) || (old < reserve) != (now < reserve)
}

// diskUsage measures what the node publishes of its disk: the bytes it
// offers (-disk-bytes, else its file system's size), the free bytes (the
// file system's, and never more than what it offers beyond what its data
// dir holds) and the bytes its data dir holds.
func (n *Node) diskUsage() (offered, free, used uint64) {
	size, fsFree, err := fsStats(n.cfg.DataDir)
	if err != nil {
		n.log.Debug("disk stats", "error", err)
	}
	used = dirBytes(n.cfg.DataDir)
	offered, free = size, fsFree
	if n.cfg.CapacityDisk > 0 {
		offered = n.cfg.CapacityDisk
		free = min(fsFree, offered-min(offered, used))
	}
	return offered, free, used
}

// dirBytes is the size of the regular files under dir.
func dirBytes(dir string) uint64 {
	var total uint64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed meanwhile (compactions)
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += uint64(info.Size())
			}
		}
		return nil
	})
	return total
}

// runStatsLoop measures the disk every StatsEvery and publishes it in
// gossip when a figure moved enough to be written to the registry.
func (n *Node) runStatsLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.StatsEvery)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		offered, free, used := n.diskUsage()
		n.gossip.update(func(m *nodeMeta) {
			if diskMoved(m.DiskBytes, offered, offered) {
				m.DiskBytes = offered
			}
			if freeMoved(m.DiskFree, free, offered) {
				m.DiskFree = free
			}
			if diskMoved(m.DataBytes, used, offered) {
				m.DataBytes = used
			}
		})
	}
}
