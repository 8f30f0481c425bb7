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

// Free-disk reserve: a node whose data dir's file system has less free
// space than this is not given new replicas; what it hosts stays. The
// reserve is a twentieth of what the node offers, at most 1 GiB, so that a
// small dev disk is not refused outright.
const maxFreeReserve = 1 << 30

// freeReserve is the free space below which nd gets no new replicas.
func freeReserve(nd *fsm.NodeRecord) uint64 {
	return min(nd.DiskBytes/20, maxFreeReserve)
}

// place chooses the nodes of a new channel from the registry. It is a pure
// function of its inputs, run only on the meta leader; the result is
// committed to the meta log, so replicas never recompute it.
func place(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, req PlaceRequest) ([]fsm.Replica, error) {
	return newAllocator(nodes, channels).place(req)
}

// PlaceOne chooses the node of one more replica of ch, by the rules a new
// channel is placed with (allocator): the replicas of ch.Placement whose
// node is not in exclude stay, and their zones and operators count for the
// spread; the chosen node is neither one of ch's nor in exclude. Repair
// calls it with the dead or draining node in exclude; scaling calls it once
// per added replica with the replicas chosen so far appended to
// ch.Placement. channels is every channel, ch included (its load counts).
// It is a pure function, like place.
func PlaceOne(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, ch fsm.ChannelRecord, exclude []string) (fsm.Replica, error) {
	a := newAllocator(nodes, channels)
	var keep []fsm.Replica
	for _, r := range ch.Placement {
		if !slices.Contains(exclude, r.NodeID) {
			keep = append(keep, r)
		}
	}
	avoid := slices.Clone(exclude)
	for _, r := range ch.Placement {
		avoid = append(avoid, r.NodeID)
	}
	req := PlaceRequest{Replicas: 1, Dedicated: ch.Dedicated, Zones: ch.Zones, Nodes: ch.Nodes}
	if ch.Dedicated {
		// ch's own nodes are reserved by ch itself: that is no reason to
		// refuse them, but they are taken anyway (avoid).
		for _, r := range ch.Placement {
			delete(a.reserved, r.NodeID)
		}
	}
	out, err := a.pick(req, keep, avoid)
	if err != nil {
		return fsm.Replica{}, err
	}
	return out[0], nil
}

// allocator places channels one after another on a registry. It keeps
// each node's replica count (load), so that placing a channel costs a scan
// of the nodes by load, not of every channel placed: 100,000 channels on
// 10,000 nodes take seconds (docs/benchmarks.md "Allocator").
//
// The rules, in order:
//   - eligible nodes only: alive, hosting data (resource nodes, core nodes
//     with -serve-data), below their max replicas and above their free-disk
//     reserve, not a dedicated channel's, in the requested zones, and, for a
//     dedicated channel, hosting nothing;
//   - each replica goes to a zone the channel uses least, then to an
//     operator it uses least: as many zones as there are, then as many
//     operators;
//   - among those, the node with the fewest replicas, resource nodes before
//     core nodes (hosting data is their job; core nodes keep headroom for
//     the control plane), then by id: same input, same output.
//
// Finally the node that is first in the fewest placements goes first
// (preferLeastLeading).
type allocator struct {
	nodes    []fsm.NodeRecord // in tie order: resource first, then by id
	byID     map[string]int
	load     []int
	first    []int // placements each node is first in
	reserved map[string]bool
	// buckets[l] holds the candidate nodes (alive and hosting data) of
	// load l, in tie order; scanning buckets in order visits nodes by
	// (load, tie order).
	buckets [][]int32
	inBkt   []bool // node is a candidate (in a bucket)
	// zones and operators of the candidate nodes, with how many: lower
	// bounds for the spread, to stop a scan early.
	zones, ops map[string]int
}

func newAllocator(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord) *allocator {
	a := &allocator{
		nodes: slices.Clone(nodes), byID: make(map[string]int, len(nodes)),
		reserved: map[string]bool{}, zones: map[string]int{}, ops: map[string]int{},
	}
	sort.SliceStable(a.nodes, func(i, j int) bool {
		if ri, rj := a.nodes[i].Role == fsm.RoleResource, a.nodes[j].Role == fsm.RoleResource; ri != rj {
			return ri
		}
		return a.nodes[i].ID < a.nodes[j].ID
	})
	for i := range a.nodes {
		a.byID[a.nodes[i].ID] = i
	}
	a.load = make([]int, len(a.nodes))
	a.first = make([]int, len(a.nodes))
	a.inBkt = make([]bool, len(a.nodes))
	for _, c := range channels {
		a.count(c.Placement, c.Dedicated)
	}
	for i := range a.nodes {
		nd := &a.nodes[i]
		if nd.State != fsm.NodeAlive || !nd.HostsData() || a.reserved[nd.ID] {
			continue
		}
		a.bucketAdd(i)
	}
	return a
}

// count records a placement's load without touching the buckets.
func (a *allocator) count(placement []fsm.Replica, dedicated bool) {
	for k, r := range placement {
		i, ok := a.byID[r.NodeID]
		if dedicated {
			a.reserved[r.NodeID] = true
		}
		if !ok {
			continue // a node removed from the registry
		}
		a.load[i]++
		if k == 0 {
			a.first[i]++
		}
	}
}

// add records a placement just committed, so that the next place sees it.
func (a *allocator) add(placement []fsm.Replica, dedicated bool) {
	for _, r := range placement {
		if i, ok := a.byID[r.NodeID]; ok && a.inBkt[i] {
			a.bucketRemove(i)
		}
	}
	a.count(placement, dedicated)
	for _, r := range placement {
		i, ok := a.byID[r.NodeID]
		if !ok || a.inBkt[i] || a.reserved[r.NodeID] {
			continue
		}
		nd := &a.nodes[i]
		if nd.State == fsm.NodeAlive && nd.HostsData() {
			a.bucketAdd(i)
		}
	}
}

func (a *allocator) bucketAdd(i int) {
	l := a.load[i]
	for len(a.buckets) <= l {
		a.buckets = append(a.buckets, nil)
	}
	b := a.buckets[l]
	at, _ := slices.BinarySearch(b, int32(i))
	a.buckets[l] = slices.Insert(b, at, int32(i))
	a.inBkt[i] = true
	a.zones[a.nodes[i].Zone]++
	a.ops[a.nodes[i].Operator]++
}

func (a *allocator) bucketRemove(i int) {
	l := a.load[i]
	b := a.buckets[l]
	if at, ok := slices.BinarySearch(b, int32(i)); ok {
		a.buckets[l] = slices.Delete(b, at, at+1)
	}
	a.inBkt[i] = false
	nd := &a.nodes[i]
	if a.zones[nd.Zone]--; a.zones[nd.Zone] == 0 {
		delete(a.zones, nd.Zone)
	}
	if a.ops[nd.Operator]--; a.ops[nd.Operator] == 0 {
		delete(a.ops, nd.Operator)
	}
}

// place chooses the nodes of a new channel; it does not record them (add).
func (a *allocator) place(req PlaceRequest) ([]fsm.Replica, error) {
	if len(req.Nodes) > 0 {
		return a.pinned(req)
	}
	out, err := a.pick(req, nil, nil)
	if err != nil {
		return nil, err
	}
	a.preferLeastLeading(out)
	return out, nil
}

// pinned checks the operator's pins: exactly these nodes, in this order.
func (a *allocator) pinned(req PlaceRequest) ([]fsm.Replica, error) {
	var out []fsm.Replica
	for _, id := range req.Nodes {
		i, ok := a.byID[id]
		if !ok {
			return nil, fmt.Errorf("%w: pinned node %q is not in the cluster", ErrInvalidRequest, id)
		}
		nd := &a.nodes[i]
		if code := a.ineligible(nd, i, req); code != placeable {
			return nil, fmt.Errorf("%w: pinned node %q %s", ErrNotEnoughNodes, id, a.why(nd, i, req, code))
		}
		out = append(out, fsm.Replica{NodeID: nd.ID, ServerID: nd.ServerID})
	}
	return out, nil
}

// pick chooses req.Replicas nodes beside keep (replicas that stay, whose
// zones and operators count), never one in avoid.
func (a *allocator) pick(req PlaceRequest, keep []fsm.Replica, avoid []string) ([]fsm.Replica, error) {
	if len(req.Nodes) > 0 {
		// A pinned channel gets only pinned nodes.
		return a.pickPinned(req, keep, avoid)
	}
	taken := make(map[int]bool, len(keep)+len(avoid)+req.Replicas)
	zoneUse, opUse := map[string]int{}, map[string]int{}
	for _, r := range keep {
		if i, ok := a.byID[r.NodeID]; ok {
			taken[i] = true
			zoneUse[a.nodes[i].Zone]++
			opUse[a.nodes[i].Operator]++
		}
	}
	for _, id := range avoid {
		if i, ok := a.byID[id]; ok {
			taken[i] = true
		}
	}
	out := make([]fsm.Replica, 0, req.Replicas)
	for len(out) < req.Replicas {
		best := -1
		var bestZ, bestO int
		lbZ, lbO := minUse(a.zones, zoneUse), minUse(a.ops, opUse)
	scan:
		for l, b := range a.buckets {
			if req.Dedicated && l > 0 {
				break
			}
			for _, i32 := range b {
				i := int(i32)
				nd := &a.nodes[i]
				if taken[i] || a.ineligible(nd, i, req) != placeable {
					continue
				}
				z, o := zoneUse[nd.Zone], opUse[nd.Operator]
				if best < 0 || z < bestZ || z == bestZ && o < bestO {
					best, bestZ, bestO = i, z, o
					if z <= lbZ && o <= lbO {
						break scan // nothing later can spread more
					}
				}
			}
		}
		if best < 0 {
			return nil, a.refusal(req, keep, avoid)
		}
		nd := &a.nodes[best]
		out = append(out, fsm.Replica{NodeID: nd.ID, ServerID: nd.ServerID})
		taken[best] = true
		zoneUse[nd.Zone]++
		opUse[nd.Operator]++
	}
	if len(keep) == 0 {
		return a.bestSpread(req, out, taken), nil
	}
	return a.improveSpread(req, keep, out, taken), nil
}

// pickPinned is pick for a pinned channel: the first pins, in their
// order, that are eligible and neither kept nor avoided.
func (a *allocator) pickPinned(req PlaceRequest, keep []fsm.Replica, avoid []string) ([]fsm.Replica, error) {
	var out []fsm.Replica
	for _, id := range req.Nodes {
		i, ok := a.byID[id]
		if !ok || slices.Contains(avoid, id) || slices.ContainsFunc(keep, func(r fsm.Replica) bool { return r.NodeID == id }) {
			continue
		}
		if a.ineligible(&a.nodes[i], i, req) == placeable {
			out = append(out, fsm.Replica{NodeID: id, ServerID: a.nodes[i].ServerID})
			if len(out) == req.Replicas {
				return out, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: the channel is pinned to %v and needs %d more of them, %d eligible",
		ErrNotEnoughNodes, req.Nodes, req.Replicas, len(out))
}

// preferLeastLeading moves to the front of a new placement the node that is
// first in the fewest existing placements. The first replica of a placement
// stands for the group's first election before the others (shard's
// electionAtStart), so this spreads the channels' leaders, and with them
// the leaders' share of the work (client requests, replication fan-out,
// applies before the followers), over the nodes instead of leaving it to
// election timing. Ties keep the placement's order.
func (a *allocator) preferLeastLeading(out []fsm.Replica) {
	best := 0
	for i := range out {
		if a.first[a.byID[out[i].NodeID]] < a.first[a.byID[out[best].NodeID]] {
			best = i
		}
	}
	if best > 0 {
		r := out[best]
		copy(out[1:best+1], out[:best])
		out[0] = r
	}
}
