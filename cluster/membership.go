package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Membership changes of channel groups (cluster/DESIGN.md "Membership
// changes"): the leader of each channel's group moves its Raft
// configuration toward the channel's placement in the committed meta state,
// one change at a time, each committed before the next is decided.

// catchUpSlack is how far behind the leader's commit index a non-voter's
// last log index may be and still count as caught up: promoted then, it
// does not hold back the commits of the group it joins as a voter (Raft
// has no catch-up stage of its own before AddVoter, docs/raft-notes.md
// "R6").
const catchUpSlack = 64

// memberOp is one configuration change.
type memberOp int

const (
	memberNone memberOp = iota
	memberAddNonvoter
	memberPromote
	memberRemove
	memberTransfer // hand the leadership to Server: the leader itself must go
)

func (o memberOp) String() string {
	return [...]string{"none", "add_nonvoter", "promote", "remove", "transfer_leadership"}[o]
}

// memberView is what a channel leader decides its next change from.
type memberView struct {
	Self      raft.ServerID // the leader
	Servers   []raft.Server // the group's latest configuration
	Placement []fsm.Replica // the channel's placement, from the committed meta state
	// Current is each registered node's current server id (its
	// incarnation); Addr its cluster address.
	Current map[string]raft.ServerID
	Addr    map[string]raft.ServerAddress
	// CaughtUp holds the placed servers (non-voters to promote, voters
	// to hand the leadership to) whose log is within catchUpSlack of the
	// leader's commit index.
	CaughtUp map[raft.ServerID]bool
}

// memberStep is the next change, or memberNone.
type memberStep struct {
	Op     memberOp
	Server raft.ServerID
	Addr   raft.ServerAddress
	Why    string
}

// nextMemberStep decides the one next configuration change that brings the
// group closer to its placement. A pure function; the rules, in order:
//
//  1. A server whose node is registered under another server id is an old
//     incarnation (its data directory was wiped): gone for good, it is
//     removed at once, voter or not. It can never vote again, so removing
//     it takes nothing from the group's availability.
//  2. A placed server missing from the configuration is added as a
//     non-voter (only once the placement names the node's current
//     incarnation).
//  3. A placed non-voter that has caught up is promoted to voter.
//  4. A server in the configuration but not in the placement is removed:
//     a non-voter at once; a voter only once every placed server is a
//     voter (add, then remove: the voters never drop below the placed
//     ones, and a replacement votes before the replaced server goes). The
//     leader that must go hands its leadership to a placed voter first
//     (one whose node reports it caught up, if any); the next leader
//     removes it. It hands over before rule 2 already when there is a
//     server to add: a replica being added takes Raft RPCs only from
//     placed nodes.
func nextMemberStep(v memberView) memberStep {
	in := map[raft.ServerID]raft.Server{}
	for _, s := range v.Servers {
		in[s.ID] = s
	}
	placed := map[raft.ServerID]bool{}
	for _, r := range v.Placement {
		placed[raft.ServerID(r.ServerID)] = true
	}
	for _, s := range v.Servers {
		node := shard.NodeOf(s.ID)
		if cur, ok := v.Current[node]; ok && cur != s.ID && s.ID != v.Self {
			return memberStep{Op: memberRemove, Server: s.ID,
				Why: fmt.Sprintf("old incarnation of node %s, which is back as %s", node, cur)}
		}
	}
	for _, r := range v.Placement {
		id := raft.ServerID(r.ServerID)
		if _, ok := in[id]; ok || v.Current[r.NodeID] != id || v.Addr[r.NodeID] == "" {
			continue
		}
		if !placed[v.Self] {
			// A replica being added takes Raft RPCs only from nodes
			// the placement names (shard.VoterCheck): a leader the
			// placement dropped (a drain) could never bring it up to
			// date, so it hands over first.
			if step, ok := handOver(v, placed); ok {
				return step
			}
		}
		return memberStep{Op: memberAddNonvoter, Server: id, Addr: v.Addr[r.NodeID], Why: "placed, not in the group"}
	}
	placedVoters := 0
	for _, s := range v.Servers {
		switch {
		case !placed[s.ID]:
		case s.Suffrage == raft.Voter:
			placedVoters++
		case v.CaughtUp[s.ID]:
			return memberStep{Op: memberPromote, Server: s.ID, Addr: s.Address, Why: "placed and caught up"}
		}
	}
	for _, s := range v.Servers {
		if !placed[s.ID] && s.Suffrage != raft.Voter {
			return memberStep{Op: memberRemove, Server: s.ID, Why: "not placed (non-voter)"}
		}
	}
	if placedVoters < len(v.Placement) {
		return memberStep{} // the replacements vote first
	}
	for _, s := range v.Servers {
		if !placed[s.ID] && s.Suffrage == raft.Voter && s.ID != v.Self {
			return memberStep{Op: memberRemove, Server: s.ID, Why: "not placed (voter; every placed server votes)"}
		}
	}
	if !placed[v.Self] {
		if step, ok := handOver(v, placed); ok {
			return step
		}
	}
	return memberStep{}
}

// handOver is the leader's hand-over when it is not placed itself: to a
// placed voter known caught up (its node answers), else the first placed
// voter; ok false when no placed server votes.
func handOver(v memberView, placed map[raft.ServerID]bool) (memberStep, bool) {
	var to *raft.Server
	for i, o := range v.Servers {
		if placed[o.ID] && o.Suffrage == raft.Voter && (to == nil || v.CaughtUp[o.ID] && !v.CaughtUp[to.ID]) {
			to = &v.Servers[i]
		}
	}
	if to == nil {
		return memberStep{}, false
	}
	return memberStep{Op: memberTransfer, Server: to.ID, Addr: to.Address, Why: "the leader is not placed"}, true
}

// runMembership drives the configuration of every channel group this node
// leads toward its placement.
func (n *Node) runMembership() {
	defer n.wg.Done()
	tick := time.NewTicker(membershipEvery)
	defer tick.Stop()
	var (
		mu     sync.Mutex
		busy   = map[uint64]bool{} // groups with a change under way
		active sync.WaitGroup
		// The channels by group and the server book, as of the meta
		// state's applied index seen: rebuilt only when it moved. Copying
		// every channel record four times a second was most of an idle
		// node's own work with 1,000 channels (docs/benchmarks.md "Idle
		// channels, real agents"); what else the decision reads (who
		// leads, each group's configuration) is read afresh every tick.
		seen    uint64
		byGroup map[uint64]fsm.ChannelRecord
		reg     serverBook
		// settled holds, per group found converged, what that decision
		// was made from: the meta state's applied index, the group's last
		// log index (a configuration change is an entry) and its term.
		// While all three stay, so does the decision, and the group costs
		// the tick three reads: 1,000 idle groups were re-decided four
		// times a second, 6-9 % of an idle node's CPU.
		settled = map[uint64]settledKey{}
	)
	defer active.Wait()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		applied := n.meta.fsm.Applied()
		if applied == 0 || n.metaSound() != nil {
			continue
		}
		if applied != seen || byGroup == nil {
			// Applied read first: an entry applied while the copies are
			// taken makes the next tick take them again.
			seen = applied
			byGroup = map[uint64]fsm.ChannelRecord{}
			for _, ch := range n.meta.fsm.Channels() {
				byGroup[ch.GroupID] = ch
			}
			reg = n.serverBook()
			for gid := range settled {
				if _, ok := byGroup[gid]; !ok {
					delete(settled, gid)
				}
			}
		}
		for _, rep := range n.shards.Replicas() {
			ch, ok := byGroup[rep.GroupID]
			if !ok || rep.Raft().State() != raft.Leader {
				continue
			}
			key := settledKey{meta: seen, last: rep.Raft().LastIndex(), term: rep.Raft().CurrentTerm()}
			if settled[rep.GroupID] == key {
				continue
			}
			// Most groups are converged: decided here without a call
			// or a goroutine; only a group with a change due (or a
			// non-voter to follow) goes on.
			v, _, ok := n.memberView(rep, ch, reg)
			if !ok {
				continue
			}
			if nextMemberStep(v).Op == memberNone && !hasPlacedNonvoter(v) {
				settled[rep.GroupID] = key
				continue
			}
			delete(settled, rep.GroupID)
			mu.Lock()
			if busy[rep.GroupID] {
				mu.Unlock()
				continue
			}
			busy[rep.GroupID] = true
			mu.Unlock()
			active.Add(1)
			go func() {
				defer active.Done()
				defer func() { mu.Lock(); delete(busy, rep.GroupID); mu.Unlock() }()
				n.converge(rep, ch)
			}()
		}
	}
}

// settledKey is what a group's "nothing to change" was decided from
// (runMembership).
type settledKey struct{ meta, last, term uint64 }

// converge takes one step of a channel group this node leads toward the
// channel's placement.
func (n *Node) converge(rep *shard.Replica, ch fsm.ChannelRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if step, _, ok := n.memberStep(ctx, rep, ch); !ok || step.Op == memberNone {
		return
	}
	// Decided from this node's copy of the meta state, which may trail
	// the meta group (a leader cut off from the meta leader, a slow
	// apply): it could undo a newer placement's change. Catch up with the
	// meta leader's commit index, and decide again from there.
	if err := n.metaSync(ctx); err != nil {
		n.log.Debug("membership: meta state not confirmed current; no change", "channel", ch.Name, "error", err)
		return
	}
	fresh, found := n.meta.fsm.Channel(ch.Name)
	if !found || fresh.GroupID != ch.GroupID {
		return
	}
	step, confIndex, ok := n.memberStep(ctx, rep, fresh)
	if !ok || step.Op == memberNone {
		return
	}
	rf := rep.Raft()
	var err error
	switch step.Op {
	case memberAddNonvoter:
		err = rf.AddNonvoter(step.Server, step.Addr, confIndex, 5*time.Second).Error()
	case memberPromote:
		err = rf.AddVoter(step.Server, step.Addr, confIndex, 5*time.Second).Error()
	case memberRemove:
		err = rf.RemoveServer(step.Server, confIndex, 5*time.Second).Error()
	case memberTransfer:
		err = rf.LeadershipTransferToServer(step.Server, step.Addr).Error()
	}
	if err != nil {
		n.log.Warn("membership change failed", "channel", ch.Name, "op", step.Op.String(), "server", step.Server, "error", err)
		return
	}
	n.metrics.memberChanges.WithLabelValues(step.Op.String()).Inc()
	n.log.Info("membership change", "channel", ch.Name, "op", step.Op.String(), "server", step.Server, "why", step.Why)
}

// serverBook is each registered node's current server id and address, as
// memberView takes them.
type serverBook struct {
	current map[string]raft.ServerID
	addr    map[string]raft.ServerAddress
}

func (n *Node) serverBook() serverBook {
	r := serverBook{current: map[string]raft.ServerID{}, addr: map[string]raft.ServerAddress{}}
	for _, nd := range n.meta.fsm.Nodes() {
		r.current[nd.ID] = raft.ServerID(nd.ServerID)
		r.addr[nd.ID] = raft.ServerAddress(nd.ClusterAddr)
	}
	return r
}

// memberView is the view of a group this node leads, without progress,
// and the index of the configuration it holds. ok is false when the
// configuration cannot be read.
func (n *Node) memberView(rep *shard.Replica, ch fsm.ChannelRecord, reg serverBook) (memberView, uint64, bool) {
	f := rep.Raft().GetConfiguration()
	if f.Error() != nil {
		return memberView{}, 0, false
	}
	return memberView{Self: n.serverID, Servers: f.Configuration().Servers, Placement: ch.Placement,
		Current: reg.current, Addr: reg.addr, CaughtUp: map[raft.ServerID]bool{}}, f.Index(), true
}

// memberStep builds the view of a group this node leads and decides its
// next change; confIndex is the index of the configuration it was decided
// from (raft refuses the change if another came first). ok is false when
// the configuration cannot be read.
func (n *Node) memberStep(ctx context.Context, rep *shard.Replica, ch fsm.ChannelRecord) (memberStep, uint64, bool) {
	v, confIndex, ok := n.memberView(rep, ch, n.serverBook())
	if !ok {
		return memberStep{}, 0, false
	}
	// A first decision without progress: only a promotion and a
	// hand-over need it, and asking costs a call per replica.
	step := nextMemberStep(v)
	transfer := step.Op == memberTransfer
	if !transfer && (step.Op != memberNone || !hasPlacedNonvoter(v)) {
		return step, confIndex, true
	}
	commit := rep.Raft().CommitIndex()
	for _, s := range v.Servers {
		if s.ID == v.Self || s.Suffrage == raft.Voter && !transfer ||
			!slices.ContainsFunc(ch.Placement, func(r fsm.Replica) bool { return r.ServerID == string(s.ID) }) {
			continue
		}
		nd, ok := n.meta.fsm.Node(shard.NodeOf(s.ID))
		if !ok {
			continue
		}
		info, err := n.route.replicaInfo(ctx, nd, ch.GroupID)
		if err == nil && info.ServerID == string(s.ID) && info.LastIndex+catchUpSlack >= commit {
			v.CaughtUp[s.ID] = true
		}
	}
	return nextMemberStep(v), confIndex, true
}

func hasPlacedNonvoter(v memberView) bool {
	for _, s := range v.Servers {
		if s.Suffrage != raft.Voter && slices.ContainsFunc(v.Placement, func(r fsm.Replica) bool { return r.ServerID == string(s.ID) }) {
			return true
		}
	}
	return false
}

// renewIncarnations, on the meta leader, rewrites each placement that names
// an old incarnation of a node now registered alive under a new server id
// (its data directory was wiped): the new one is then an added replica,
// which joins the group and never bootstraps, and the channel's leader
// removes the old id (nextMemberStep rule 1). One proposal per channel.
func (n *Node) renewIncarnations() {
	if fsm.CheckVersion(fsm.MetaVersion(&fsm.SetPlacement{}), n.meta.fsm.ClusterVersion()) != nil {
		return
	}
	applied := n.meta.fsm.Applied() // before the records, as repairStep
	if applied == n.renewedAt {
		return // nothing changed since a pass that had nothing to renew
	}
	current := map[string]string{}
	for _, nd := range n.meta.fsm.Nodes() {
		if nd.State == fsm.NodeAlive {
			current[nd.ID] = nd.ServerID
		}
	}
	renewed := false
	for _, ch := range n.meta.fsm.Channels() {
		next := slices.Clone(ch.Placement)
		changed := false
		for i, r := range next {
			if cur, ok := current[r.NodeID]; ok && cur != r.ServerID {
				next[i] = fsm.Replica{NodeID: r.NodeID, ServerID: cur}
				changed = true
			}
		}
		if !changed {
			continue
		}
		res, err := n.proposeMeta(context.Background(), &fsm.SetPlacement{Channel: ch.Name, Placement: next, Expect: ch.ModifyIndex})
		if err == nil {
			err = res.Err
		}
		if err != nil {
			if !errors.Is(err, fsm.ErrPlacementChanged) {
				n.log.Warn("renew a wiped node's replica", "channel", ch.Name, "error", err)
			}
			return
		}
		n.log.Info("placement names the new incarnation of a wiped node", "channel", ch.Name, "placement", serverIDs(next))
		renewed = true
	}
	if !renewed {
		n.renewedAt = applied
	}
}

func serverIDs(rs []fsm.Replica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ServerID
	}
	return out
}

// Removal of a replica this node no longer holds (reconciler.go): a
// removed follower is never told, so it asks the group's leader.

// memberAnswer is the answer of rcMember.
type memberAnswer byte

const (
	memberKeep memberAnswer = 0 // still listed, still placed, or a change under way
	memberGone memberAnswer = 1 // the leader's committed configuration does not list it, nor its placement
)

// removedHere reports whether the replica rep of a channel that still
// exists but no longer places this node may be deleted: only on a
// definite answer of the group's current leader.
func (n *Node) removedHere(ctx context.Context, rep *shard.Replica, ch fsm.ChannelRecord) bool {
	rf := rep.Raft()
	if rf.State() == raft.Leader {
		return false // it hands its leadership over first (nextMemberStep)
	}
	var leaders []fsm.NodeRecord
	if _, id := rf.LeaderWithID(); id != "" && id != n.serverID {
		if nd, ok := n.meta.fsm.Node(shard.NodeOf(id)); ok {
			leaders = append(leaders, nd)
		}
	}
	if len(leaders) == 0 {
		// Removed, it hears no leader: ask the placed replicas who leads.
		for _, nd := range n.placedNodes(ch) {
			info, err := n.route.replicaInfo(ctx, nd, ch.GroupID)
			if err == nil && info.State == raft.Leader.String() {
				leaders = append(leaders, nd)
				break
			}
		}
	}
	for _, nd := range leaders {
		ans, err := n.route.memberQuery(ctx, nd, ch.GroupID, n.serverID)
		if err != nil {
			n.log.Debug("ask the leader about a replica no longer placed here", "channel", ch.Name, "leader", nd.ID, "error", err)
			continue
		}
		return ans == memberGone
	}
	return false
}

// memberQuery answers, on a group's leader, whether server may delete its
// replica of the group.
func (n *Node) memberQuery(gid uint64, server raft.ServerID) (memberAnswer, error) {
	rep, ok := n.shards.Replica(gid)
	if !ok {
		return memberKeep, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	rf := rep.Raft()
	if rf.State() != raft.Leader {
		return memberKeep, fmt.Errorf("%w: group %d", shard.ErrNotLeader, gid)
	}
	// Leadership confirmed by answers to messages sent from now on
	// (shard.ConfirmLeadership): raft's VerifyLeader alone counts answers
	// to older messages (docs/raft-notes.md "R2"), and a deposed leader
	// must not tell a replica it is gone.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := rep.ReadIndex(ctx); err != nil {
		return memberKeep, fmt.Errorf("%w: group %d: %v", shard.ErrNotLeader, gid, err)
	}
	f := rf.GetConfiguration()
	if f.Error() != nil {
		return memberKeep, f.Error()
	}
	if f.Index() > rf.CommitIndex() {
		return memberKeep, nil // a change under way: ask again later
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == server {
			return memberKeep, nil
		}
	}
	for _, ch := range n.meta.fsm.Channels() {
		if ch.GroupID == gid && slices.ContainsFunc(ch.Placement, func(r fsm.Replica) bool { return r.ServerID == string(server) }) {
			return memberKeep, nil // placed again: it will be added back
		}
	}
	return memberGone, nil
}

// memberQuery (rcMember): head gid u64 | server id; answer one byte, a
// memberAnswer. It asks the node nd, which should lead the group.
func (r *router) memberQuery(ctx context.Context, nd fsm.NodeRecord, gid uint64, server raft.ServerID) (memberAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, internalCallLimit)
	defer cancel()
	ans, err := r.simple(ctx, "member", nd.ClusterAddr, rcMember, append(u64(gid), server...))
	if err != nil {
		return memberKeep, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	if len(ans) != 1 || memberAnswer(ans[0]) > memberGone {
		return memberKeep, fmt.Errorf("cluster: ask %s about group %d: bad answer", nd.ID, gid)
	}
	return memberAnswer(ans[0]), nil
}

func (r *router) serveMember(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) <= 8 {
		return nil, nil, fmt.Errorf("%w: member call of %d bytes", ErrInvalidRequest, len(head))
	}
	ans, err := r.n.memberQuery(binary.BigEndian.Uint64(head), raft.ServerID(head[8:]))
	if err != nil {
		return nil, nil, err
	}
	return []byte{byte(ans)}, nil, nil
}
