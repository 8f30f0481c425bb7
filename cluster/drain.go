package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// The operator's node commands: drain (the meta leader moves every replica
// off a live node: repair.go does the moving), leave (a node that holds no
// replica leaves gracefully) and remove (a dead or left node is forgotten:
// replicas, meta vote, registry). docs/operations.md "Drain, leave,
// remove" is the operator's side.

// ErrNodeState: the node's state does not allow the operation (a live node
// removed, a node holding replicas leaving, a dead node drained, a meta
// vote the quorum needs); the message has the numbers. Nothing was done.
var ErrNodeState = errors.New("cluster: the node's state does not allow this")

// Leaving is closed once this node agreed to leave the cluster (LeaveNode):
// its process shuts down gracefully, which leaves gossip.
func (n *Node) Leaving() <-chan struct{} { return n.leaving }

// SetOperatorTokens replaces the operator tokens (one per line) that route
// calls are checked against, as the HTTP server's (agent.SetOperatorTokens).
func (n *Node) SetOperatorTokens(tokens string) error { return n.check.SetOperatorTokens(tokens) }

// NodeDetail describes node id from this node's copy of the meta state:
// the replicas placed on it, whether a drain is done, what cannot move.
func (n *Node) NodeDetail(ctx context.Context, id string) (api.NodeDetail, error) {
	all, err := n.Nodes(ctx)
	if err != nil {
		return api.NodeDetail{}, err
	}
	i := slices.IndexFunc(all, func(nd api.Node) bool { return nd.ID == id })
	if i < 0 {
		return api.NodeDetail{}, fmt.Errorf("%w: %q", ErrNodeNotFound, id)
	}
	out := api.NodeDetail{Node: all[i]}
	channels := n.meta.fsm.Channels()
	for _, ch := range channels {
		if ch.HasNode(id) {
			out.Channels = append(out.Channels, ch.Name)
		}
	}
	out.ReplicasLeft = len(out.Channels)
	out.Drained = out.State == fsm.NodeDraining && out.ReplicasLeft == 0
	// What could never move, decided as the meta leader does, from the
	// same state, without its moves in flight.
	_, blocked := planMoves(n.meta.fsm.Nodes(), channels, nil, nil, repairLimits{PerNode: len(channels) + 1, Max: len(channels) + 1})
	for _, b := range blocked {
		if b.Node == id {
			out.Blocked = append(out.Blocked, api.BlockedMove{Channel: b.Channel, Reason: b.Why})
		}
	}
	for _, s := range n.metaVoters() {
		if shard.NodeOf(s.ID) == id {
			out.MetaVoter = true
		}
	}
	return out, nil
}

// DrainNode starts (drain) or cancels a drain of node id, on the meta
// leader: a draining node gets no new replica, and the meta leader moves
// its replicas elsewhere, rate-limited as repairs are.
func (n *Node) DrainNode(ctx context.Context, id string, drain bool) error {
	return n.route.do(ctx, "drain", func(ctx context.Context) error {
		return n.drainHere(ctx, id, drain)
	}, func(ctx context.Context, re *shard.RedirectError) error {
		return n.seeMetaWrite(ctx, n.route.drain(ctx, re, id, drain))
	})
}

func (n *Node) drainHere(ctx context.Context, id string, drain bool) error {
	if n.meta.raft.State() != raft.Leader {
		return n.metaRedirect()
	}
	// Not between the leader loop's read of a node and its update from
	// gossip, which would undo the new state.
	n.registryMu.Lock()
	defer n.registryMu.Unlock()
	nd, ok := n.meta.fsm.Node(id)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNodeNotFound, id)
	}
	state := fsm.NodeDraining
	switch {
	case drain && nd.State == fsm.NodeDraining, !drain && nd.State != fsm.NodeDraining:
		return nil // already so
	case drain && (nd.State == fsm.NodeDead || nd.State == fsm.NodeLeft):
		return fmt.Errorf("%w: node %s is %s: a dead node's replicas are repaired without a drain; `shardnet node remove %s` forgets it", ErrNodeState, id, nd.State, id)
	case !drain:
		state = fsm.NodeAlive // gossip corrects it at the next step if it is not
	}
	res, err := n.proposeMeta(ctx, &fsm.SetNodeState{ID: id, State: state})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return fmt.Errorf("cluster: drain %s: %w", id, res.Err)
	}
	n.log.Info("node drain", "node", id, "draining", drain)
	n.pokeLeader()
	return nil
}

// LeaveNode makes node id (this node when id is its name) leave the
// cluster, on that node: it refuses while any channel places a replica
// there, or when its meta vote is one the quorum needs; then the node
// announces it through gossip, the meta leader records it left and takes
// it out of the meta group, and the node's process shuts down (Leaving).
func (n *Node) LeaveNode(ctx context.Context, id string) error {
	return n.route.do(ctx, "leave", func(ctx context.Context) error {
		if id == n.cfg.Name {
			return n.leaveHere(ctx)
		}
		nd, ok := n.meta.fsm.Node(id)
		if !ok {
			return fmt.Errorf("%w: %q", ErrNodeNotFound, id)
		}
		return &shard.RedirectError{Err: ErrUnreachable, NodeID: id, Addr: nd.ClusterAddr}
	}, func(ctx context.Context, re *shard.RedirectError) error {
		return n.route.leave(ctx, re)
	})
}

func (n *Node) leaveHere(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		// Answer "not ready, try again" while the caller still listens:
		// a call that ends at its deadline is a timeout to the client,
		// which cannot tell it from a leave still under way (CI).
		if left := time.Until(d); left < leaveAnswerMargin {
			return fmt.Errorf("%w: %v left of the call is too little to wait for the meta leader's record; send the leave again", ErrNotReady, left.Round(time.Millisecond))
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-leaveAnswerMargin))
		defer cancel()
	}
	if err := n.metaSync(ctx); err != nil {
		return fmt.Errorf("%w: cannot check what this node holds: %v", ErrNotReady, err)
	}
	var held []string
	for _, ch := range n.meta.fsm.Channels() {
		if ch.HasNode(n.cfg.Name) {
			held = append(held, ch.Name)
		}
	}
	if len(held) > 0 {
		return fmt.Errorf("%w: node %s still holds %d replicas (%s); drain it first: shardnet node drain %s", ErrNodeState, n.cfg.Name, len(held), shortList(held), n.cfg.Name)
	}
	if err := n.voteRemovable(n.cfg.Name); err != nil {
		return err
	}
	// Announced through gossip: the meta leader records the node left
	// and takes it out of the meta group; the answer waits for the
	// record, so that the registry shows it when the operator looks.
	n.gossip.update(func(m *nodeMeta) { m.Leaving = true })
	if !n.waitLeftRecorded(ctx, leaveRecordWait) {
		n.gossip.update(func(m *nodeMeta) { m.Leaving = false })
		return fmt.Errorf("%w: the meta leader did not record node %s left in time; it stays; try again", ErrNotReady, n.cfg.Name)
	}
	n.log.Info("leaving the cluster at the operator's request")
	n.leavingOnce.Do(func() { close(n.leaving) })
	return nil
}

// leaveRecordWait bounds how long a leave waits for the meta leader to
// record it: gossip carries the announcement in well under a second on a
// LAN, and the leader loop runs every leaderLoopEvery.
const leaveRecordWait = 10 * time.Second

// leaveAnswerMargin is how long before the caller's deadline a leave that
// was not recorded gives up and answers so: a caller with less than that
// left is answered not_ready at once.
const leaveAnswerMargin = time.Second

// waitLeftRecorded waits until this node's copy of the meta state shows it
// left, ctx ends or wait passes.
func (n *Node) waitLeftRecorded(ctx context.Context, wait time.Duration) bool {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	push := time.NewTicker(leavePushEvery)
	defer push.Stop()
	var pushing atomic.Bool
	pushOnce := func() {
		if !pushing.CompareAndSwap(false, true) {
			return
		}
		select {
		case <-n.stop:
			pushing.Store(false)
			return
		default:
		}
		n.wg.Add(1) // a push may outlast the wait; Stop waits for it
		go func() {
			defer n.wg.Done()
			defer pushing.Store(false)
			n.pushLeaving()
		}()
	}
	pushOnce()
	for {
		changed := n.meta.fsm.Changed()
		if nd, ok := n.meta.fsm.Node(n.cfg.Name); ok && nd.State == fsm.NodeLeft {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-n.stop:
			return false
		case <-push.C:
			pushOnce()
		case <-changed:
		}
	}
}

// leavePushEvery is how often a leave not yet recorded hands this node's
// gossip state to the meta leader again.
const leavePushEvery = 2 * time.Second

// pushLeaving hands this node's gossip state, Leaving set, to the meta
// leader in a push/pull exchange over TCP. The broadcast of the change
// alone reaches every member only with high probability: memberlist sends
// it a few times to members picked at random, and with the loopback
// timings of 5-node test clusters the meta leader missed it about one
// leave in ten, until the next full state sync 15 s later.
func (n *Node) pushLeaving() {
	_, id := n.metaLeader()
	nd, ok := n.meta.fsm.Node(shard.NodeOf(id))
	if !ok || nd.ID == n.cfg.Name || nd.GossipAddr == "" {
		return // no leader known (the wait ends unrecorded), or this node leads and knows already
	}
	if err := n.gossip.pushTo(nd.GossipAddr); err != nil {
		n.log.Debug("push the leave to the meta leader", "leader", nd.ID, "error", err)
	}
}

// RemoveNode forgets a dead or left node for good, on the meta leader: the
// replicas still placed on it are placed elsewhere (all of them decided
// first: when one cannot move, nothing is done), its meta vote is removed
// when the quorum allows, then its registry record.
func (n *Node) RemoveNode(ctx context.Context, id string) (api.NodeRemoved, error) {
	var out api.NodeRemoved
	err := n.route.do(ctx, "remove_node", func(ctx context.Context) (err error) {
		out, err = n.removeHere(ctx, id)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		out, err = n.route.removeNode(ctx, re, id)
		return n.seeMetaWrite(ctx, err)
	})
	return out, err
}

func (n *Node) removeHere(ctx context.Context, id string) (api.NodeRemoved, error) {
	out := api.NodeRemoved{ID: id}
	if n.meta.raft.State() != raft.Leader {
		return out, n.metaRedirect()
	}
	n.registryMu.Lock()
	defer n.registryMu.Unlock()
	nd, ok := n.meta.fsm.Node(id)
	if !ok {
		return out, fmt.Errorf("%w: %q", ErrNodeNotFound, id)
	}
	if nd.State != fsm.NodeDead && nd.State != fsm.NodeLeft {
		return out, fmt.Errorf("%w: node %s is %s: only a dead or left node can be removed; drain it and run `shardnet node leave %s`, or stop it and wait until the registry shows it dead", ErrNodeState, id, nd.State, id)
	}
	if err := n.voteRemovable(id); err != nil {
		return out, err
	}
	// Every replica on the node is decided before any is moved.
	moves, err := n.movesOff(id)
	if err != nil {
		return out, err
	}
	for _, mv := range moves {
		res, err := n.proposeMeta(ctx, &fsm.SetPlacement{Channel: mv.Channel, Placement: mv.Placement, Expect: mv.Expect})
		if err == nil {
			err = res.Err
		}
		if err != nil {
			return out, fmt.Errorf("cluster: remove %s: place channel %s elsewhere (%d of %d moved; run it again): %w", id, mv.Channel, len(out.Moved), len(moves), err)
		}
		out.Moved = append(out.Moved, mv.Channel)
		n.repair.mu.Lock()
		n.repair.inFlight[mv.Channel] = &moveInFlight{placementMove: mv, Index: res.Index, Started: time.Now()}
		n.repair.mu.Unlock()
		n.metrics.repairsStarted.WithLabelValues("removed").Inc()
		n.log.Info("moving a replica off a removed node", "channel", mv.Channel, "from", id, "to", mv.To.NodeID)
	}
	f := n.meta.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return out, fmt.Errorf("cluster: remove %s: read the meta configuration: %w", id, err)
	}
	for _, s := range f.Configuration().Servers {
		if shard.NodeOf(s.ID) != id {
			continue
		}
		if err := n.meta.raft.RemoveServer(s.ID, 0, 10*time.Second).Error(); err != nil {
			return out, fmt.Errorf("cluster: remove %s from the meta group: %w", id, err)
		}
		if s.Suffrage == raft.Voter {
			out.MetaVoteRemoved = true
		}
	}
	res, err := n.proposeMeta(ctx, &fsm.RemoveNode{ID: id})
	if err != nil {
		return out, err
	}
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrNodeNotFound) {
		return out, fmt.Errorf("cluster: remove %s from the registry: %w", id, res.Err)
	}
	n.log.Info("node removed", "node", id, "replicas_moved", len(out.Moved), "meta_vote_removed", out.MetaVoteRemoved)
	return out, nil
}

// movesOff decides a move for every replica placed on node id, treated as
// dead, or fails with every channel that cannot move and why.
func (n *Node) movesOff(id string) ([]placementMove, error) {
	nodes := n.meta.fsm.Nodes()
	byID := map[string]fsm.NodeRecord{}
	for i := range nodes {
		if nodes[i].ID == id {
			nodes[i].State = fsm.NodeDead
		}
		byID[nodes[i].ID] = nodes[i]
	}
	current := n.meta.fsm.Channels()
	var moves []placementMove
	var why []string
	for i, ch := range current {
		j := slices.IndexFunc(ch.Placement, func(r fsm.Replica) bool { return r.NodeID == id })
		if j < 0 {
			continue
		}
		_, _, alive, _ := replicaToMove(ch, byID)
		mv, err := decideMove(nodes, current, ch, ch.Placement[j], alive, func(string) bool { return false })
		if err != nil {
			why = append(why, fmt.Sprintf("channel %s: %v", ch.Name, err))
			continue
		}
		mv.Why = "removed"
		moves = append(moves, mv)
		current[i].Placement = mv.Placement
	}
	if len(why) > 0 {
		return nil, fmt.Errorf("%w: %d of the %d replicas on node %s cannot be placed elsewhere, so nothing was done: %s", ErrNodeState, len(why), len(why)+len(moves), id, strings.Join(why, "; "))
	}
	return moves, nil
}

// voteRemovable refuses when node id has a meta vote whose removal would
// leave fewer live voters than the meta group's quorum (metaVoteCheck).
func (n *Node) voteRemovable(id string) error {
	f := n.meta.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("cluster: read the meta configuration: %w", err)
	}
	return metaVoteCheck(f.Configuration().Servers, id, func(node string) bool {
		nd, ok := n.meta.fsm.Node(node)
		return ok && nd.State != fsm.NodeDead && nd.State != fsm.NodeLeft
	})
}

// metaVoteCheck is nil unless node id is a voter among servers and,
// without its vote, the voters that are live (not dead or left in the
// registry) would be fewer than the quorum of the voters left, or none
// would be left: then the error has the numbers.
func metaVoteCheck(servers []raft.Server, id string, live func(node string) bool) error {
	voter := false
	after, up := 0, 0
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		node := shard.NodeOf(s.ID)
		if node == id {
			voter = true
			continue
		}
		after++
		if live(node) {
			up++
		}
	}
	if !voter {
		return nil
	}
	need := after/2 + 1
	if after == 0 || up < need {
		return fmt.Errorf("%w: without node %s's vote the meta group has %d voters, %d of them live, and needs %d: bring a dead core node back (or add core nodes) first", ErrNodeState, id, after, up, need)
	}
	return nil
}

// shortList names up to five items, then how many more.
func shortList(items []string) string {
	if len(items) <= 5 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:5], ", "), len(items)-5)
}

func (n *Node) pokeLeader() {
	select {
	case n.lpoke <- struct{}{}:
	default:
	}
}

// nodeCall is the head of the node calls (rcDrain, rcRemoveNode), as JSON.
type nodeCall struct {
	Node  string `json:"node"`
	Drain bool   `json:"drain,omitempty"`
}

// drain (rcDrain): to the meta leader; an empty answer.
func (r *router) drain(ctx context.Context, re *shard.RedirectError, id string, drain bool) error {
	return r.metaJSON(ctx, "drain", rcDrain, re, nodeCall{Node: id, Drain: drain}, nil)
}

func (r *router) serveDrain(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	var c nodeCall
	if err := json.Unmarshal(head, &c); err != nil || c.Node == "" {
		return nil, nil, fmt.Errorf("%w: malformed drain call", ErrInvalidRequest)
	}
	return nil, nil, r.n.DrainNode(ctx, c.Node, c.Drain)
}

// leave (rcLeave): to the node that leaves; no head, an empty answer.
func (r *router) leave(ctx context.Context, re *shard.RedirectError) error {
	// The node answers once its copy of the meta state shows it left
	// (leaveHere: a meta sync, then up to leaveRecordWait): a call given
	// only internalCallLimit timed out on a busy machine while the leave
	// went on (TestDrainUnderLoad in CI).
	ctx, cancel := context.WithTimeout(ctx, internalCallLimit+leaveRecordWait+leaveAnswerMargin+time.Second)
	defer cancel()
	_, err := r.simple(ctx, "leave", re.Addr, rcLeave, nil)
	if errors.Is(err, errPreviousVersion) {
		return fmt.Errorf("%w: node %s runs a version without node leave; stop it instead", ErrNodeState, re.NodeID)
	}
	return err
}

func (r *router) serveLeave(ctx context.Context, _ []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	return nil, nil, r.n.leaveHere(ctx)
}

// removeNode (rcRemoveNode): to the meta leader; answer the JSON of the
// api.NodeRemoved.
func (r *router) removeNode(ctx context.Context, re *shard.RedirectError, id string) (api.NodeRemoved, error) {
	var out api.NodeRemoved
	err := r.metaJSON(ctx, "remove_node", rcRemoveNode, re, nodeCall{Node: id}, &out)
	return out, err
}

func (r *router) serveRemoveNode(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	var c nodeCall
	if err := json.Unmarshal(head, &c); err != nil || c.Node == "" {
		return nil, nil, fmt.Errorf("%w: malformed remove call", ErrInvalidRequest)
	}
	out, err := r.n.RemoveNode(ctx, c.Node)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(out)
	return b, nil, err
}
