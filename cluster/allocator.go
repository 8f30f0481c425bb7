package cluster

import (
	"fmt"
	"slices"
	"sort"

	"github.com/shardnet/shardnet/fsm"
)

// PlaceRequest is what a channel asks of the allocator.
type PlaceRequest struct {
	Replicas  int
	Dedicated bool     // nodes no other channel uses, and that no later channel will get
	Zones     []string // restrict to these zones (empty: any)
	Nodes     []string // operator pins: exactly these nodes
}

// place chooses the nodes of a new channel from the registry: alive nodes
// with room, fewest replicas first, spreading zones. It is a pure function
// of its inputs, run only on the meta leader; the result is committed to the
// meta log, so replicas never recompute it.
func place(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, req PlaceRequest) ([]fsm.Replica, error) {
	load := map[string]int{}
	reserved := map[string]bool{} // nodes of dedicated channels
	for _, c := range channels {
		for _, r := range c.Placement {
			load[r.NodeID]++
			if c.Dedicated {
				reserved[r.NodeID] = true
			}
		}
	}
	byID := map[string]fsm.NodeRecord{}
	for _, nd := range nodes {
		byID[nd.ID] = nd
	}
	if len(req.Nodes) > 0 {
		var out []fsm.Replica
		for _, id := range req.Nodes {
			nd, ok := byID[id]
			switch {
			case !ok:
				return nil, fmt.Errorf("%w: pinned node %q is not in the cluster", ErrInvalidRequest, id)
			case nd.State != fsm.NodeAlive:
				return nil, fmt.Errorf("%w: pinned node %q is %s", ErrNotEnoughNodes, id, nd.State)
			case reserved[id]:
				return nil, fmt.Errorf("%w: pinned node %q belongs to a dedicated channel", ErrNotEnoughNodes, id)
			case req.Dedicated && load[id] > 0:
				return nil, fmt.Errorf("%w: pinned node %q already hosts channels; a dedicated channel needs empty nodes", ErrNotEnoughNodes, id)
			}
			out = append(out, fsm.Replica{NodeID: nd.ID, ServerID: nd.ServerID})
		}
		return out, nil
	}
	var eligible []fsm.NodeRecord
	for _, nd := range nodes {
		if nd.State != fsm.NodeAlive || reserved[nd.ID] {
			continue
		}
		if req.Dedicated && load[nd.ID] > 0 {
			continue
		}
		if len(req.Zones) > 0 && !slices.Contains(req.Zones, nd.Zone) {
			continue
		}
		if nd.MaxReplicas > 0 && load[nd.ID] >= nd.MaxReplicas {
			continue
		}
		eligible = append(eligible, nd)
	}
	if len(eligible) < req.Replicas {
		what := "alive nodes with room"
		if req.Dedicated {
			what = "alive nodes that host no other channel"
		}
		return nil, fmt.Errorf("%w: the channel needs %d replicas but only %d %s are eligible", ErrNotEnoughNodes, req.Replicas, len(eligible), what)
	}
	sort.SliceStable(eligible, func(i, j int) bool {
		if load[eligible[i].ID] != load[eligible[j].ID] {
			return load[eligible[i].ID] < load[eligible[j].ID]
		}
		// At equal load, resource nodes first: hosting data is their job,
		// and core nodes keep their headroom for the control plane.
		if ri, rj := eligible[i].Role == fsm.RoleResource, eligible[j].Role == fsm.RoleResource; ri != rj {
			return ri
		}
		return eligible[i].ID < eligible[j].ID
	})
	// Greedy: the least loaded node of a zone not used yet; once every zone
	// is used, start over. Ties keep the sort order, so the result is stable.
	var out []fsm.Replica
	used := map[string]bool{}
	taken := map[string]bool{}
	for len(out) < req.Replicas {
		picked := false
		for _, nd := range eligible {
			if taken[nd.ID] || used[nd.Zone] {
				continue
			}
			out = append(out, fsm.Replica{NodeID: nd.ID, ServerID: nd.ServerID})
			taken[nd.ID], used[nd.Zone], picked = true, true, true
			break
		}
		if !picked {
			used = map[string]bool{}
		}
	}
	preferLeastLeading(out, channels)
	return out, nil
}

// preferLeastLeading moves to the front of a new placement the node that is
// first in the fewest existing placements. The first replica of a placement
// stands for the group's first election before the others (shard's
// electionAtStart), so this spreads the channels' leaders, and with them
// the leaders' share of the work (client requests, replication fan-out,
// applies before the followers), over the nodes instead of leaving it to
// election timing. Ties keep the placement's order.
func preferLeastLeading(out []fsm.Replica, channels []fsm.ChannelRecord) {
	first := map[string]int{}
	for _, c := range channels {
		if len(c.Placement) > 0 {
			first[c.Placement[0].NodeID]++
		}
	}
	best := 0
	for i := range out {
		if first[out[i].NodeID] < first[out[best].NodeID] {
			best = i
		}
	}
	if best > 0 {
		r := out[best]
		copy(out[1:best+1], out[:best])
		out[0] = r
	}
}
