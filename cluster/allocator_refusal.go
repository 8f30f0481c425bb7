package cluster

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/shardnet/shardnet/fsm"
)

// Which nodes may take a replica, and a refusal that says why not with
// the numbers.

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
