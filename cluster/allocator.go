package cluster

import (
	"fmt"
	"slices"
	"sort"
	"strings"

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

// Why a node may not take a replica (placeable: it may).
const (
	placeable = iota
	notAlive
	noData
	reservedNode
	notEmpty
	otherZone
	full
	lowDisk
)

// ineligible says why node i may not take a replica of req (placeable if it may).
// It is on the allocator's hot path: no formatting here (why).
func (a *allocator) ineligible(nd *fsm.NodeRecord, i int, req PlaceRequest) int {
	switch {
	case nd.State != fsm.NodeAlive:
		return notAlive
	case !nd.HostsData():
		return noData
	case a.reserved[nd.ID]:
		return reservedNode
	case req.Dedicated && a.load[i] > 0:
		return notEmpty
	case len(req.Zones) > 0 && !slices.Contains(req.Zones, nd.Zone):
		return otherZone
	case nd.MaxReplicas > 0 && a.load[i] >= nd.MaxReplicas:
		return full
	case nd.Reported && nd.DiskFree < freeReserve(nd):
		return lowDisk
	}
	return placeable
}

// why says, for one node, what ineligible found.
func (a *allocator) why(nd *fsm.NodeRecord, i int, req PlaceRequest, code int) string {
	switch code {
	case notAlive:
		return "is " + nd.State
	case noData:
		return "is a core node started without -serve-data"
	case reservedNode:
		return "belongs to a dedicated channel"
	case notEmpty:
		return fmt.Sprintf("hosts %d replicas of other channels; a dedicated channel needs empty nodes", a.load[i])
	case otherZone:
		return fmt.Sprintf("is in zone %q, not in %v", nd.Zone, req.Zones)
	case full:
		return fmt.Sprintf("hosts %d replicas, its max", a.load[i])
	case lowDisk:
		return fmt.Sprintf("has %d bytes free, below its reserve of %d", nd.DiskFree, freeReserve(nd))
	}
	return ""
}

// reasons are ineligible's codes as a refusal counts them.
var reasons = map[int]string{
	notAlive: "not alive", noData: "core nodes without -serve-data", reservedNode: "a dedicated channel's",
	notEmpty: "host other channels", otherZone: "outside the zones asked for", full: "at their max replicas",
	lowDisk: "below their free-disk reserve",
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

// spreadOf counts the zones and operators of some nodes.
func (a *allocator) spreadOf(sets ...[]fsm.Replica) (zones, ops int) {
	z, o := map[string]bool{}, map[string]bool{}
	for _, set := range sets {
		for _, r := range set {
			if i, ok := a.byID[r.NodeID]; ok {
				z[a.nodes[i].Zone], o[a.nodes[i].Operator] = true, true
			}
		}
	}
	return len(z), len(o)
}

// class is the nodes of one zone and one operator.
type class struct{ zone, op string }

// reps returns the first eligible node not taken of each class, by load
// (then tie order), in that order.
func (a *allocator) reps(req PlaceRequest, taken map[int]bool) []int {
	var out []int
	seen := map[class]bool{}
	for l, b := range a.buckets {
		if req.Dedicated && l > 0 {
			break
		}
		for _, i32 := range b {
			i := int(i32)
			nd := &a.nodes[i]
			k := class{nd.Zone, nd.Operator}
			if taken[i] || seen[k] || a.ineligible(nd, i, req) != placeable {
				continue
			}
			seen[k] = true
			out = append(out, i)
		}
	}
	return out
}

// bestSpread makes a new channel's greedy picks cover the most zones,
// then the most operators, that any choice of as many eligible nodes
// could. The greedy picks reach the most zones, but may miss an operator
// when an early pick took the only operator of a zone needed later. The
// most operators is exact: with Z the most zones, a choice covering Z zones
// holds one node per zone (T) and r-Z others; T's operators are at most ν,
// the largest matching of zones to operators through nodes, and each other
// node adds at most one; so min(ops, min(Z, ν)+r-Z), which the
// construction below reaches. When the greedy picks reach it (the usual
// case, and the benchmark's) this costs one pass over the classes.
func (a *allocator) bestSpread(req PlaceRequest, out []fsm.Replica, taken map[int]bool) []fsm.Replica {
	r := len(out)
	z, o := a.spreadOf(out)
	if z == min(r, len(a.zones)) && o == min(r, len(a.ops)) {
		return out // a.zones and a.ops hold every eligible node's
	}
	for _, rep := range out {
		delete(taken, a.byID[rep.NodeID])
	}
	reps := a.reps(req, taken)
	zs, os := map[string]bool{}, map[string]bool{}
	for _, i := range reps {
		zs[a.nodes[i].Zone], os[a.nodes[i].Operator] = true, true
	}
	bestZ := min(r, len(zs))
	if z == bestZ && o == min(r, len(os)) {
		return out
	}
	// The largest matching of zones to operators (Kuhn's augmenting
	// paths), over classes in load order so that it prefers light nodes.
	opOf := map[string]int{}   // zone -> its matched class (index in reps)
	zoneOf := map[string]int{} // operator -> the zone's matched class
	adj := map[string][]int{}
	var zoneOrder []string
	for k, i := range reps {
		zn := a.nodes[i].Zone
		if _, ok := adj[zn]; !ok {
			zoneOrder = append(zoneOrder, zn)
		}
		adj[zn] = append(adj[zn], k)
	}
	var try func(zn string, seen map[string]bool) bool
	try = func(zn string, seen map[string]bool) bool {
		for _, k := range adj[zn] {
			op := a.nodes[reps[k]].Operator
			if seen[op] {
				continue
			}
			seen[op] = true
			if prev, ok := zoneOf[op]; !ok || try(a.nodes[reps[prev]].Zone, seen) {
				zoneOf[op], opOf[zn] = k, k
				return true
			}
		}
		return false
	}
	nu := 0
	for _, zn := range zoneOrder {
		if try(zn, map[string]bool{}) {
			nu++
		}
	}
	bestO := min(len(os), min(bestZ, nu)+r-bestZ)
	if z == bestZ && o == bestO {
		return out
	}
	// T: matched classes (at most bestZ), then the lightest node of as
	// many other zones as needed; then new operators; then the lightest.
	var picked []int
	used := map[int]bool{}
	usedZ, usedO := map[string]bool{}, map[string]bool{}
	take := func(k int) {
		picked, used[k] = append(picked, k), true
		usedZ[a.nodes[reps[k]].Zone], usedO[a.nodes[reps[k]].Operator] = true, true
	}
	for _, zn := range zoneOrder {
		if k, ok := opOf[zn]; ok && len(picked) < bestZ {
			take(k)
		}
	}
	for k, i := range reps {
		if len(usedZ) < bestZ && !used[k] && !usedZ[a.nodes[i].Zone] {
			take(k)
		}
	}
	for k, i := range reps {
		if len(picked) < r && !used[k] && !usedO[a.nodes[i].Operator] {
			take(k)
		}
	}
	next := make([]fsm.Replica, 0, r)
	for _, k := range picked {
		i := reps[k]
		next = append(next, fsm.Replica{NodeID: a.nodes[i].ID, ServerID: a.nodes[i].ServerID})
		taken[i] = true
	}
	// The rest: the lightest nodes not taken, whatever their class.
	for l, b := range a.buckets {
		for _, i32 := range b {
			i := int(i32)
			if len(next) == r || req.Dedicated && l > 0 {
				break
			}
			if !taken[i] && a.ineligible(&a.nodes[i], i, req) == placeable {
				next = append(next, fsm.Replica{NodeID: a.nodes[i].ID, ServerID: a.nodes[i].ServerID})
				taken[i] = true
			}
		}
	}
	return next
}

// improveSpread swaps picked nodes for others while that covers more
// zones, or as many zones and more operators, beside replicas that stay
// (keep): for repair and scaling, which add one replica at a time, the
// greedy pick is already the best (a single pick takes the zone, then the
// operator, used least); for more at once it is a local search, not
// proven the best. A swap takes the first node by load of its zone and
// operator, so the loads stay as even as the spread allows.
func (a *allocator) improveSpread(req PlaceRequest, keep, out []fsm.Replica, taken map[int]bool) []fsm.Replica {
	for range 2 * len(out) { // each swap gains a zone or an operator
		z, o := a.spreadOf(keep, out)
		reps := a.reps(req, taken)
		swapped := false
	search:
		for k := range out {
			was := out[k]
			for _, i := range reps {
				out[k] = fsm.Replica{NodeID: a.nodes[i].ID, ServerID: a.nodes[i].ServerID}
				if z2, o2 := a.spreadOf(keep, out); z2 > z || z2 == z && o2 > o {
					taken[a.byID[was.NodeID]] = false
					taken[i] = true
					swapped = true
					break search
				}
			}
			out[k] = was
		}
		if !swapped {
			return out
		}
	}
	return out
}

// minUse is the least use of any value among have (a lower bound of what a
// next pick can reach).
func minUse(have, use map[string]int) int {
	n, least := 0, -1
	for v, k := range use {
		if have[v] > 0 {
			n++
			if least < 0 || k < least {
				least = k
			}
		}
	}
	if n < len(have) || least < 0 {
		return 0 // a value not used yet
	}
	return least
}

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

// refusal says, with the numbers, why fewer nodes than asked are eligible:
// "the channel needs 3 free nodes (hosting no other channel), 1 available
// (of 6 nodes: 1 not alive, 4 host other channels)".
func (a *allocator) refusal(req PlaceRequest, keep []fsm.Replica, avoid []string) error {
	count := map[string]int{}
	eligible, have := 0, 0
	for i := range a.nodes {
		nd := &a.nodes[i]
		code := a.ineligible(nd, i, req)
		switch {
		case slices.ContainsFunc(keep, func(r fsm.Replica) bool { return r.NodeID == nd.ID }):
			have++
		case slices.Contains(avoid, nd.ID):
			count["excluded"]++
		case code == placeable:
			eligible++
		default:
			count[reasons[code]]++
		}
	}
	what := "eligible nodes"
	if req.Dedicated {
		what = "free nodes (hosting no other channel)"
	}
	if len(req.Zones) > 0 {
		what += fmt.Sprintf(" in zones %v", req.Zones)
	}
	parts := make([]string, 0, len(count))
	for why, k := range count {
		parts = append(parts, fmt.Sprintf("%d %s", k, why))
	}
	sort.Strings(parts)
	msg := fmt.Sprintf("the channel needs %d %s, %d available", req.Replicas+have, what, eligible+have)
	if len(parts) > 0 {
		msg += fmt.Sprintf(" (of %d nodes: %s)", len(a.nodes), strings.Join(parts, ", "))
	}
	return fmt.Errorf("%w: %s", ErrNotEnoughNodes, msg)
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
