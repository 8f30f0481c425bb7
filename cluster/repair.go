package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shardnet/shardnet/fsm"
)

// Automatic repair and drain: the meta leader's decisions that move
// replicas off nodes that must be vacated (cluster/DESIGN.md "Repair and
// drain"). A replica on a dead node is re-placed on an eligible node; a
// replica on a draining node likewise, dead nodes first. Each decision is
// one fsm.SetPlacement that replaces one replica of one channel, decided
// from the channel's ModifyIndex (Expect): a decision that raced another
// placement change is refused by the meta FSM and decided again next step.
// The channel's Raft group then converges to the new placement (its leader
// adds the new replica as a non-voter, promotes it once caught up and
// removes the old one).
//
// A move is in flight from its SetPlacement until the channel's leader
// reports a configuration of exactly the placed nodes, all voters (asked
// with the replica-info call): placements alone cannot tell, since the
// group converges after the placement is committed. Moves in flight are
// bounded per target node (RepairPerNode: a new replica catches up from a
// snapshot that the target writes) and cluster-wide (RepairMax: the
// leaders stream those snapshots); a channel has at most one move in
// flight, so its group makes one configuration change at a time.

// Repair defaults (Config.RepairPerNode, Config.RepairMax).
const (
	DefaultRepairPerNode = 2
	DefaultRepairMax     = 8
	// repairStall is how long a move may stay in flight without the
	// group converging before it stops counting against the limits: a
	// group that cannot converge (its leader is gone) must not hold every
	// other repair back. It is logged.
	repairStall = 5 * time.Minute
)

// repairLimits bound the moves in flight.
type repairLimits struct {
	PerNode int // moves in flight onto one target node
	Max     int // moves in flight in the cluster
}

// placementMove is one decided move: replica From of Channel is replaced
// by To, giving Placement, decided from the channel's ModifyIndex Expect.
type placementMove struct {
	Channel   string
	Expect    uint64
	From      fsm.Replica
	To        fsm.Replica
	Placement []fsm.Replica
	Why       string // the state of From's node: dead or draining
}

// blockedChannel is a channel with a replica to move that cannot move,
// and why (with the numbers).
type blockedChannel struct {
	Channel string
	Node    string // the node its replica should leave
	Why     string
}

// errRepairWait: every eligible node is at its limit of moves in flight;
// the move waits (it is not blocked).
var errRepairWait = errors.New("cluster: every eligible node is at its repair limit")

// planMoves decides the moves to start now: for each channel without a
// move in flight (busy), its replica on a dead node (first) or on a
// draining node is replaced by an eligible node, while the limits allow.
// inFlight counts the moves in flight by target node. Channels closest to
// losing their quorum go first. It is a pure function of its
// inputs; blocked lists the channels that cannot move at all.
func planMoves(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, busy map[string]bool, inFlight map[string]int, lim repairLimits) (moves []placementMove, blocked []blockedChannel) {
	byID := make(map[string]fsm.NodeRecord, len(nodes))
	for _, nd := range nodes {
		byID[nd.ID] = nd
	}
	total := 0
	perTarget := map[string]int{}
	for id, k := range inFlight {
		perTarget[id] = k
		total += k
	}
	type todo struct {
		ch    fsm.ChannelRecord
		from  fsm.Replica
		why   string
		alive int
	}
	var work []todo
	for _, ch := range channels {
		if busy[ch.Name] {
			continue
		}
		from, why, alive, ok := replicaToMove(ch, byID)
		if !ok {
			continue
		}
		work = append(work, todo{ch, from, why, alive})
	}
	// Dead before draining; closest to losing its quorum first; by name, so
	// that the plan is stable.
	sort.SliceStable(work, func(i, j int) bool {
		if (work[i].why == fsm.NodeDead) != (work[j].why == fsm.NodeDead) {
			return work[i].why == fsm.NodeDead
		}
		if mi, mj := work[i].alive-quorum(work[i].ch), work[j].alive-quorum(work[j].ch); mi != mj {
			return mi < mj
		}
		return work[i].ch.Name < work[j].ch.Name
	})
	// Placements as decided so far: a move counts in the load of its
	// target for the next decisions.
	current := slices.Clone(channels)
	index := map[string]int{}
	for i, ch := range current {
		index[ch.Name] = i
	}
	for _, w := range work {
		if total >= lim.Max {
			// The cluster is at its limit: the rest waits, but says now
			// what could never move.
			if why := cannotMove(w.ch, w.alive); why != "" {
				blocked = append(blocked, blockedChannel{Channel: w.ch.Name, Node: w.from.NodeID, Why: why})
			}
			continue
		}
		full := func(id string) bool { return perTarget[id] >= lim.PerNode }
		mv, err := decideMove(nodes, current, w.ch, w.from, w.alive, full)
		switch {
		case errors.Is(err, errRepairWait):
			continue
		case err != nil:
			blocked = append(blocked, blockedChannel{Channel: w.ch.Name, Node: w.from.NodeID, Why: err.Error()})
			continue
		}
		mv.Why = w.why
		moves = append(moves, mv)
		perTarget[mv.To.NodeID]++
		total++
		current[index[w.ch.Name]].Placement = mv.Placement
	}
	return moves, blocked
}

// quorum is the majority of ch's placement.
func quorum(ch fsm.ChannelRecord) int { return len(ch.Placement)/2 + 1 }

// decideMove replaces replica from of ch (alive of whose replicas are on
// nodes that are not dead) with a node pickReplacement chooses among
// channels as placed so far.
func decideMove(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, ch fsm.ChannelRecord, from fsm.Replica, alive int, full func(id string) bool) (placementMove, error) {
	if why := cannotMove(ch, alive); why != "" {
		return placementMove{}, errors.New(why)
	}
	to, err := pickReplacement(nodes, channels, ch, from, full)
	if err != nil {
		return placementMove{}, err
	}
	next := make([]fsm.Replica, 0, len(ch.Placement))
	for _, r := range ch.Placement {
		if r.ServerID == from.ServerID {
			r = to
		}
		next = append(next, r)
	}
	return placementMove{Channel: ch.Name, Expect: ch.ModifyIndex, From: from, To: to, Placement: next}, nil
}

// replicaToMove returns the replica of ch to move off its node (one on a
// dead node first, else one on a draining node), its node's state, and
// how many of ch's replicas are on nodes that are not dead. A replica on
// a node the registry no longer holds counts as dead.
func replicaToMove(ch fsm.ChannelRecord, byID map[string]fsm.NodeRecord) (fsm.Replica, string, int, bool) {
	var dead, draining *fsm.Replica
	alive := 0
	for i, r := range ch.Placement {
		// A node registered under another server id than the replica's
		// was wiped and came back: renewIncarnations (membership.go)
		// renames the replica, it is not moved.
		nd, ok := byID[r.NodeID]
		state := fsm.NodeDead
		if ok {
			state = nd.State
		}
		switch {
		case state == fsm.NodeDead:
			if dead == nil {
				dead = &ch.Placement[i]
			}
			continue
		case state == fsm.NodeDraining && draining == nil:
			draining = &ch.Placement[i]
		}
		alive++
	}
	switch {
	case dead != nil:
		return *dead, fsm.NodeDead, alive, true
	case draining != nil:
		return *draining, fsm.NodeDraining, alive, true
	}
	return fsm.Replica{}, "", alive, false
}

// cannotMove says why a replica of ch cannot be moved at all ("" when it
// can): every replica is dead, the group has lost its quorum (its leader
// could never commit the change), or the channel is pinned to its nodes.
func cannotMove(ch fsm.ChannelRecord, alive int) string {
	n := len(ch.Placement)
	switch {
	case alive == 0:
		return fmt.Sprintf("every replica (%d of %d) is on a dead node: nothing is left to copy from; restart one of them", n, n)
	case alive < quorum(ch):
		return fmt.Sprintf("%d of %d replicas are on dead nodes: the group has lost its quorum (needs %d) and cannot change its configuration; restart one of them", n-alive, n, quorum(ch))
	case len(ch.Nodes) > 0:
		return fmt.Sprintf("the channel is pinned to nodes %s: repair does not choose other nodes for it", strings.Join(ch.Nodes, ", "))
	}
	return ""
}

// pickReplacement chooses the node that takes ch's replica on node from,
// by the rules of a channel's creation (PlaceOne: alive, hosting data,
// room, not another dedicated channel's node, a dedicated ch only on a node
// nobody uses, ch's zones; zones then operators spread, least loaded,
// resource nodes first). full says a node is at its limit of moves in
// flight: when only such nodes are eligible, errRepairWait. No eligible
// node at all is ErrNotEnoughNodes, with the numbers.
func pickReplacement(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, ch fsm.ChannelRecord, from fsm.Replica, full func(id string) bool) (fsm.Replica, error) {
	exclude := []string{from.NodeID}
	for _, nd := range nodes {
		if nd.ID != from.NodeID && full(nd.ID) {
			exclude = append(exclude, nd.ID)
		}
	}
	to, err := PlaceOne(nodes, channels, ch, exclude)
	if err == nil {
		return to, nil
	}
	if len(exclude) > 1 {
		if _, werr := PlaceOne(nodes, channels, ch, exclude[:1]); werr == nil {
			return fsm.Replica{}, errRepairWait
		}
	}
	return fsm.Replica{}, err
}

// repairs is the meta leader's memory of its moves in flight and of the
// channels it found blocked. It is lost with the leadership: a new leader
// starts with no move in flight (its first steps may start up to the
// limits more while the old moves converge).
type repairs struct {
	mu       sync.Mutex
	inFlight map[string]*moveInFlight // by channel
	blocked  map[string]string        // channel → why, as last logged
	told     bool                     // logged that repairs wait for the cluster version
	// settled is the meta applied index at which a step had no move in
	// flight and found none to start: until the meta state moves, the
	// next step would decide the same from the same records.
	settled uint64
}

type moveInFlight struct {
	placementMove
	Index   uint64 // the SetPlacement's index: the channel's ModifyIndex after it
	Started time.Time
}

// repairStep is the leader loop's repair and drain step: it forgets the
// moves whose group converged, then starts the moves the limits allow.
func (n *Node) repairStep() {
	if err := fsm.CheckVersion(fsm.MetaVersion(&fsm.SetPlacement{}), n.meta.fsm.ClusterVersion()); err != nil {
		if !n.repair.told {
			n.log.Info("no automatic repair or drain until every node is upgraded", "reason", err)
			n.repair.told = true
		}
		return
	}
	applied := n.meta.fsm.Applied() // before the records: an apply meanwhile makes the next step decide again
	n.settleMoves()
	n.repair.mu.Lock()
	if len(n.repair.inFlight) == 0 && n.repair.settled == applied {
		n.repair.mu.Unlock()
		return // planMoves reads only the meta records and the moves in flight
	}
	busy := map[string]bool{}
	perTarget := map[string]int{}
	for name, mv := range n.repair.inFlight {
		busy[name] = true
		perTarget[mv.To.NodeID]++
	}
	n.repair.mu.Unlock()
	moves, blocked := planMoves(n.meta.fsm.Nodes(), n.meta.fsm.Channels(), busy, perTarget, repairLimits{PerNode: n.cfg.RepairPerNode, Max: n.cfg.RepairMax})
	n.logBlocked(blocked)
	if len(moves) == 0 && len(busy) == 0 {
		n.repair.mu.Lock()
		n.repair.settled = applied
		n.repair.mu.Unlock()
	}
	for _, mv := range moves {
		res, err := n.proposeMeta(context.Background(), &fsm.SetPlacement{Channel: mv.Channel, Placement: mv.Placement, Expect: mv.Expect})
		if err == nil {
			err = res.Err
		}
		switch {
		case errors.Is(err, fsm.ErrPlacementChanged), errors.Is(err, fsm.ErrChannelNotFound):
			// Decided from an older read: decided again next step.
			n.log.Debug("placement changed before the move; deciding again", "channel", mv.Channel)
			continue
		case err != nil:
			n.log.Warn("move a replica", "channel", mv.Channel, "from", mv.From.NodeID, "to", mv.To.NodeID, "error", err)
			return
		}
		n.repair.mu.Lock()
		n.repair.inFlight[mv.Channel] = &moveInFlight{placementMove: mv, Index: res.Index, Started: time.Now()}
		n.repair.mu.Unlock()
		n.metrics.repairsStarted.WithLabelValues(mv.Why).Inc()
		n.log.Info("moving a replica", "channel", mv.Channel, "from", mv.From.NodeID, "to", mv.To.NodeID, "because", mv.Why)
	}
}

// logBlocked logs each blocked channel once per reason, and keeps the
// reasons for the node descriptions.
func (n *Node) logBlocked(blocked []blockedChannel) {
	n.repair.mu.Lock()
	defer n.repair.mu.Unlock()
	now := map[string]string{}
	for _, b := range blocked {
		now[b.Channel] = b.Why
		if n.repair.blocked[b.Channel] != b.Why {
			n.log.Warn("a replica cannot be moved", "channel", b.Channel, "node", b.Node, "reason", b.Why)
		}
	}
	n.repair.blocked = now
}

// settleMoves forgets the moves in flight that are over: the channel's
// leader reports exactly the placed nodes as voters (converged), the
// channel changed again or is gone, or the move stalled.
func (n *Node) settleMoves() {
	n.repair.mu.Lock()
	var check []*moveInFlight
	for name, mv := range n.repair.inFlight {
		ch, ok := n.meta.fsm.Channel(name)
		switch {
		case !ok || ch.ModifyIndex != mv.Index:
			delete(n.repair.inFlight, name)
		case time.Since(mv.Started) > repairStall:
			n.log.Warn("a moved replica's group has not converged; it no longer counts against the repair limits", "channel", name, "to", mv.To.NodeID, "since", mv.Started)
			delete(n.repair.inFlight, name)
		default:
			check = append(check, mv)
		}
	}
	n.repair.mu.Unlock()
	var wg sync.WaitGroup
	done := make([]bool, len(check))
	for i, mv := range check {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done[i] = n.converged(mv.Channel)
		}()
	}
	wg.Wait()
	n.repair.mu.Lock()
	defer n.repair.mu.Unlock()
	for i, mv := range check {
		if done[i] && n.repair.inFlight[mv.Channel] == mv {
			delete(n.repair.inFlight, mv.Channel)
			n.metrics.repairSeconds.Observe(time.Since(mv.Started).Seconds())
			n.log.Info("replica moved: the group runs on its placement", "channel", mv.Channel, "from", mv.From.NodeID, "to", mv.To.NodeID, "took", time.Since(mv.Started).Round(time.Millisecond))
		}
	}
}

// converged reports whether channel's group runs exactly on its placement:
// its leader's configuration lists the placed nodes, all voters, and no
// other server. It asks the new replica's node who leads, then the leader.
func (n *Node) converged(channel string) bool {
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	want := make([]string, 0, len(ch.Placement))
	for _, r := range ch.Placement {
		want = append(want, r.NodeID)
	}
	slices.Sort(want)
	for _, r := range slices.Backward(ch.Placement) {
		nd, ok := n.meta.fsm.Node(r.NodeID)
		if !ok || nd.State != fsm.NodeAlive && nd.State != fsm.NodeDraining {
			continue
		}
		info, err := n.route.replicaInfo(ctx, nd, ch.GroupID)
		if err != nil || info.Leader == "" {
			continue
		}
		if info.Leader != nd.ID {
			leader, ok := n.meta.fsm.Node(info.Leader)
			if !ok {
				return false
			}
			if info, err = n.route.replicaInfo(ctx, leader, ch.GroupID); err != nil || info.Leader != leader.ID {
				return false
			}
		}
		voters := slices.Clone(info.Voters)
		slices.Sort(voters)
		return len(info.NonVoters) == 0 && slices.Equal(voters, want)
	}
	return false
}
