package cluster

import (
	"github.com/shardnet/shardnet/fsm"
)

// The spread of a channel over zones and operators, beyond the greedy
// picks of allocator.pick.

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
