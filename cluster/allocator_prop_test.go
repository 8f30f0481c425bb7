package cluster

import (
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	"github.com/shardnet/shardnet/fsm"
)

// The allocator's invariants on random clusters (hand-rolled seeded
// random: a failure names its seed, and -seed... is not needed: the seeds
// are the loop's).

// randomCluster is n nodes of random role, zone, operator, state and
// capacity.
func randomCluster(rng *rand.Rand, n int) []fsm.NodeRecord {
	zones := 1 + rng.Intn(4)
	ops := 1 + rng.Intn(4)
	states := []string{fsm.NodeAlive, fsm.NodeAlive, fsm.NodeAlive, fsm.NodeAlive, fsm.NodeSuspect, fsm.NodeDead, fsm.NodeDraining}
	var out []fsm.NodeRecord
	for i := range n {
		nd := fsm.NodeRecord{
			ID: fmt.Sprintf("n%02d", i), ServerID: fmt.Sprintf("n%02d@1", i),
			Role: fsm.RoleResource, Zone: fmt.Sprintf("z%d", rng.Intn(zones)), Operator: fmt.Sprintf("o%d", rng.Intn(ops)),
			State: states[rng.Intn(len(states))], Reported: true, DiskBytes: 100 << 30, DiskFree: 50 << 30,
		}
		if rng.Intn(3) == 0 {
			nd.Role = fsm.RoleCore
			nd.ServeData = rng.Intn(2) == 0
		}
		if rng.Intn(8) == 0 {
			nd.DiskFree = 1 << 20
		}
		if rng.Intn(6) == 0 {
			nd.MaxReplicas = 1 + rng.Intn(3)
		}
		out = append(out, nd)
	}
	return out
}

// eligibleFor is the rules written out again, independently of the
// allocator's code: which nodes may take a replica of req.
func eligibleFor(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, req PlaceRequest) map[string]bool {
	load, reserved := map[string]int{}, map[string]bool{}
	for _, c := range channels {
		for _, r := range c.Placement {
			load[r.NodeID]++
			if c.Dedicated {
				reserved[r.NodeID] = true
			}
		}
	}
	out := map[string]bool{}
	for _, nd := range nodes {
		if nd.State != fsm.NodeAlive || reserved[nd.ID] || nd.Role == fsm.RoleCore && !nd.ServeData {
			continue
		}
		if req.Dedicated && load[nd.ID] > 0 || nd.MaxReplicas > 0 && load[nd.ID] >= nd.MaxReplicas {
			continue
		}
		if nd.DiskFree < nd.DiskBytes/20 || len(req.Zones) > 0 && !slices.Contains(req.Zones, nd.Zone) {
			continue
		}
		out[nd.ID] = true
	}
	return out
}

// bestSpread is the most zones, then the most operators, that any r of
// the eligible nodes cover (brute force: small clusters only).
func bestSpread(nodes []fsm.NodeRecord, eligible map[string]bool, r int) (zones, ops int) {
	var cand []fsm.NodeRecord
	for _, nd := range nodes {
		if eligible[nd.ID] {
			cand = append(cand, nd)
		}
	}
	var rec func(from int, chosen []fsm.NodeRecord)
	rec = func(from int, chosen []fsm.NodeRecord) {
		if len(chosen) == r {
			z, o := spread(chosen)
			if z > zones || z == zones && o > ops {
				zones, ops = z, o
			}
			return
		}
		for i := from; i < len(cand); i++ {
			rec(i+1, append(chosen, cand[i]))
		}
	}
	rec(0, nil)
	return zones, ops
}

func spread(nds []fsm.NodeRecord) (zones, ops int) {
	z, o := map[string]bool{}, map[string]bool{}
	for _, nd := range nds {
		z[nd.Zone], o[nd.Operator] = true, true
	}
	return len(z), len(o)
}

func TestPlaceProperties(t *testing.T) {
	for seed := int64(1); seed <= 400; seed++ {
		rng := rand.New(rand.NewSource(seed))
		nodes := randomCluster(rng, 3+rng.Intn(10))
		byID := map[string]fsm.NodeRecord{}
		for _, nd := range nodes {
			byID[nd.ID] = nd
		}
		var channels []fsm.ChannelRecord
		inc := newAllocator(nodes, nil) // told of each placement (add)
		for c := range 12 {
			req := PlaceRequest{Replicas: 1 + rng.Intn(5), Dedicated: rng.Intn(8) == 0}
			if rng.Intn(6) == 0 {
				req.Zones = []string{"z0", "z1"}
			}
			eligible := eligibleFor(nodes, channels, req)
			got, err := place(nodes, channels, req)
			if again, err2 := inc.place(req); !reflect.DeepEqual(again, got) || (err == nil) != (err2 == nil) {
				t.Fatalf("seed %d channel %d: place from scratch %v (%v), the allocator told of each placement %v (%v)", seed, c, ids(got), err, ids(again), err2)
			}
			if len(eligible) < req.Replicas {
				if err == nil {
					t.Fatalf("seed %d channel %d: placed %v with %d eligible nodes for %d replicas", seed, c, ids(got), len(eligible), req.Replicas)
				}
				continue
			}
			if err != nil {
				t.Fatalf("seed %d channel %d: %v, with %d eligible nodes for %d replicas", seed, c, err, len(eligible), req.Replicas)
			}
			if len(got) != req.Replicas {
				t.Fatalf("seed %d channel %d: %d replicas, want %d", seed, c, len(got), req.Replicas)
			}
			seen := map[string]bool{}
			var chosen []fsm.NodeRecord
			for _, r := range got {
				if seen[r.NodeID] {
					t.Fatalf("seed %d channel %d: node %s twice in %v", seed, c, r.NodeID, ids(got))
				}
				seen[r.NodeID] = true
				if !eligible[r.NodeID] {
					t.Fatalf("seed %d channel %d: node %+v is not eligible for %+v", seed, c, byID[r.NodeID], req)
				}
				if r.ServerID != byID[r.NodeID].ServerID {
					t.Fatalf("seed %d: server id %s for %s", seed, r.ServerID, r.NodeID)
				}
				chosen = append(chosen, byID[r.NodeID])
			}
			wz, wo := bestSpread(nodes, eligible, req.Replicas)
			if z, o := spread(chosen); z != wz || o != wo {
				t.Fatalf("seed %d channel %d: %v covers %d zones and %d operators, %d and %d were possible", seed, c, ids(got), z, o, wz, wo)
			}
			// Same input, same output, whatever the order of the nodes.
			shuffled := slices.Clone(nodes)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if again, _ := place(shuffled, channels, req); !reflect.DeepEqual(again, got) {
				t.Fatalf("seed %d channel %d: %v, then %v from the same nodes in another order", seed, c, ids(got), ids(again))
			}
			inc.add(got, req.Dedicated)
			channels = append(channels, fsm.ChannelRecord{Name: fmt.Sprintf("c%d", c), Dedicated: req.Dedicated, Placement: got, Zones: req.Zones})
			checkPlaceOne(t, seed, nodes, channels, channels[len(channels)-1], rng)
		}
		// Dedicated channels own their nodes alone.
		owner := map[string]string{}
		for _, c := range channels {
			for _, r := range c.Placement {
				if prev, ok := owner[r.NodeID]; ok && (c.Dedicated || channelByName(channels, prev).Dedicated) {
					t.Fatalf("seed %d: node %s hosts %s and %s, one of them dedicated", seed, r.NodeID, prev, c.Name)
				}
				owner[r.NodeID] = c.Name
			}
		}
	}
}

func channelByName(channels []fsm.ChannelRecord, name string) fsm.ChannelRecord {
	for _, c := range channels {
		if c.Name == name {
			return c
		}
	}
	return fsm.ChannelRecord{}
}

// Where every node may take every channel and no zone or operator pulls
// one way, channels placed one after another leave the loads within one
// of each other (the best possible), and the incremental allocator agrees
// with place computed from scratch.
func TestPlaceBalancesLoad(t *testing.T) {
	for seed := int64(1); seed <= 100; seed++ {
		rng := rand.New(rand.NewSource(seed))
		n := 3 + rng.Intn(20)
		distinctZones := rng.Intn(2) == 0 // every node its own zone, or one zone
		var nodes []fsm.NodeRecord
		for i := range n {
			nd := fsm.NodeRecord{ID: fmt.Sprintf("n%02d", i), ServerID: fmt.Sprintf("n%02d@1", i), Role: fsm.RoleResource, State: fsm.NodeAlive}
			if distinctZones {
				nd.Zone = nd.ID
			}
			nodes = append(nodes, nd)
		}
		a := newAllocator(nodes, nil)
		var channels []fsm.ChannelRecord
		for c := range 60 {
			req := PlaceRequest{Replicas: 1 + rng.Intn(min(7, n))}
			got, err := a.place(req)
			if err != nil {
				t.Fatal(err)
			}
			if fresh, _ := place(nodes, channels, req); !reflect.DeepEqual(fresh, got) {
				t.Fatalf("seed %d channel %d: the allocator placed %v, place from scratch %v", seed, c, ids(got), ids(fresh))
			}
			a.add(got, false)
			channels = append(channels, fsm.ChannelRecord{Name: fmt.Sprint(c), Placement: got})
			lo, hi := a.load[0], a.load[0]
			for _, l := range a.load {
				lo, hi = min(lo, l), max(hi, l)
			}
			if hi-lo > 1 {
				t.Fatalf("seed %d after %d channels: loads %v", seed, c+1, a.load)
			}
		}
	}
}

// BenchmarkPlace100kChannels10kNodes places 100,000 channels of 3
// replicas, one after another, on 10,000 nodes in 10 zones and 50
// operators (docs/benchmarks.md "Allocator"). One op is the whole run.
func BenchmarkPlace100kChannels10kNodes(b *testing.B) {
	var nodes []fsm.NodeRecord
	for i := range 10000 {
		nodes = append(nodes, fsm.NodeRecord{
			ID: fmt.Sprintf("node-%05d", i), ServerID: fmt.Sprintf("node-%05d@1", i), Role: fsm.RoleResource,
			Zone: fmt.Sprintf("zone-%d", i%10), Operator: fmt.Sprintf("op-%d", i%50), State: fsm.NodeAlive,
			Reported: true, DiskBytes: 1 << 40, DiskFree: 1 << 39,
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		a := newAllocator(nodes, nil)
		for range 100000 {
			p, err := a.place(PlaceRequest{Replicas: 3})
			if err != nil {
				b.Fatal(err)
			}
			a.add(p, false)
		}
	}
}

// checkPlaceOne replaces a random replica of ch and checks the choice
// against every single choice possible: eligible, not one of ch's, and
// covering the most zones, then operators, beside the replicas that stay.
func checkPlaceOne(t *testing.T, seed int64, nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, ch fsm.ChannelRecord, rng *rand.Rand) {
	t.Helper()
	gone := ch.Placement[rng.Intn(len(ch.Placement))].NodeID
	byID := map[string]fsm.NodeRecord{}
	for _, nd := range nodes {
		byID[nd.ID] = nd
	}
	var stay []fsm.NodeRecord
	for _, r := range ch.Placement {
		if r.NodeID != gone {
			stay = append(stay, byID[r.NodeID])
		}
	}
	// Eligibility as for a new channel, ch's own reservation aside.
	others := slices.DeleteFunc(slices.Clone(channels), func(c fsm.ChannelRecord) bool { return c.Name == ch.Name })
	eligible := eligibleFor(nodes, others, PlaceRequest{Dedicated: ch.Dedicated, Zones: ch.Zones})
	if ch.Dedicated {
		// A dedicated channel's replacement hosts nothing, ch included.
		eligible = eligibleFor(nodes, channels, PlaceRequest{Dedicated: true, Zones: ch.Zones})
	}
	bz, bo := -1, -1
	for id := range eligible {
		if ch.HasNode(id) {
			continue
		}
		z, o := spread(append(slices.Clone(stay), byID[id]))
		if z > bz || z == bz && o > bo {
			bz, bo = z, o
		}
	}
	got, err := PlaceOne(nodes, channels, ch, []string{gone})
	if bz < 0 {
		if err == nil {
			t.Fatalf("seed %d: PlaceOne for %s chose %s with no eligible node", seed, ch.Name, got.NodeID)
		}
		return
	}
	if err != nil {
		t.Fatalf("seed %d: PlaceOne for %s: %v", seed, ch.Name, err)
	}
	if !eligible[got.NodeID] || ch.HasNode(got.NodeID) {
		t.Fatalf("seed %d: PlaceOne for %s chose %s: not eligible or one of its own", seed, ch.Name, got.NodeID)
	}
	if z, o := spread(append(stay, byID[got.NodeID])); z != bz || o != bo {
		t.Fatalf("seed %d: PlaceOne for %s chose %s: %d zones and %d operators, %d and %d were possible", seed, ch.Name, got.NodeID, z, o, bz, bo)
	}
}

// BenchmarkPlaceOneOn100kChannels is one PlaceOne (a repair's choice) on a
// registry of 10,000 nodes holding 100,000 channels: it builds the load
// counts from every placement each time.
func BenchmarkPlaceOneOn100kChannels(b *testing.B) {
	var nodes []fsm.NodeRecord
	for i := range 10000 {
		nodes = append(nodes, fsm.NodeRecord{
			ID: fmt.Sprintf("node-%05d", i), ServerID: fmt.Sprintf("node-%05d@1", i), Role: fsm.RoleResource,
			Zone: fmt.Sprintf("zone-%d", i%10), Operator: fmt.Sprintf("op-%d", i%50), State: fsm.NodeAlive,
			Reported: true, DiskBytes: 1 << 40, DiskFree: 1 << 39,
		})
	}
	a := newAllocator(nodes, nil)
	channels := make([]fsm.ChannelRecord, 0, 100000)
	for c := range 100000 {
		p, err := a.place(PlaceRequest{Replicas: 3})
		if err != nil {
			b.Fatal(err)
		}
		a.add(p, false)
		channels = append(channels, fsm.ChannelRecord{Name: fmt.Sprint(c), Placement: p})
	}
	ch := channels[len(channels)/2]
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := PlaceOne(nodes, channels, ch, []string{ch.Placement[0].NodeID}); err != nil {
			b.Fatal(err)
		}
	}
}
