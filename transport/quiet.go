package transport

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Quiet appends (idle cost, docs/raft-notes.md "R7"). A Raft leader sends
// each follower an AppendEntries every CommitTimeout even when it has
// nothing to send, so that followers learn the commit index of the last
// writes. In an idle group every one of those says again what the follower
// already knows: no entries, the same previous entry, the same commit index.
// At 1,000 idle groups on three nodes they were 40 % of the nodes' CPU
// (docs/benchmarks.md "Quiet appends"). The pipeline answers such an append
// itself, as the follower would, instead of sending it.
//
// An append is answered here only when all of these hold:
//   - it carries no entries and is not a heartbeat;
//   - the follower's latest real answer of this term said its log matches
//     this leader's through the request's previous entry and ends there,
//     and it had already been sent a commit index at least the request's;
//   - the follower really answered a message of this term (a heartbeat,
//     every HeartbeatTimeout/10 to /5) sent within quietContact;
//   - a real append went out within quietRefresh;
//   - the pipeline's connection is still open.
//
// What the local answer may and may not do. Raft counts it as contact with
// the follower (the leader lease): quietContact bounds by how much a leader
// cut off from its followers outlives its lease. It carries no entries, so
// it moves no match index and commits nothing. It is not counted by
// AckedSince (noteFollower is not called), so a read is never confirmed by
// it: ConfirmLeadership waits for answers that crossed the wire.
// quietRefresh bounds what a follower that lost its commit index without
// the connection noticing (a replica restarted in place) waits to learn it
// again.
//
// Parked pipelines. A pipeline costs three goroutines (its reader here,
// raft's decoder, the follower's stream server) and a stream's buffers,
// whether or not the group writes: at 1,000 idle groups a third of every
// node's goroutines. A pipeline that sent no entries for pipelineIdle is
// parked: the quiet append that finds it so is answered "not appended"
// (Success false, still of the term), on which raft closes the pipeline
// and goes back to plain AppendEntries, and AppendEntriesPipeline refuses
// the follower (raft.ErrPipelineReplicationNotSupported, which raft takes
// silently) until an append with entries succeeds. The plain appends of
// an idle group are answered by quietAnswer as the pipeline's were; the
// first write after a pause goes as one plain append, and the pipeline
// opens again after its answer. The "no" carries no entries and changes no
// index: raft only stops pipelining on it.
const (
	quietContact = time.Second
	quietRefresh = 10 * time.Second
)

// pipelineIdle is a variable for the tests only.
var pipelineIdle = 10 * time.Second

// noteAppended records, in the follower's entry, a real successful answer
// of its term to the append args (noteFollower): the follower's log now
// matches this leader's through args' last entry, and it took
// min(LeaderCommitIndex, its last index) as its commit index, its log
// reaching at least that entry.
func (f *followerLog) noteAppended(args *raft.AppendEntriesRequest, now time.Time) {
	matched := args.PrevLogEntry + uint64(len(args.Entries))
	f.matchTerm, f.matched, f.commit, f.appendAt = args.Term, matched, min(args.LeaderCommitIndex, matched), now
}

// quietAnswer returns the answer the follower at target would give to args
// and true when args tells it nothing new (see above); false means send it.
func (g *GroupTransport) quietAnswer(target raft.ServerAddress, args *raft.AppendEntriesRequest) (raft.AppendEntriesResponse, bool) {
	if len(args.Entries) != 0 || isHeartbeat(args) {
		return raft.AppendEntriesResponse{}, false
	}
	now := time.Now()
	g.followersMu.Lock()
	f, ok := g.followers[target]
	g.followersMu.Unlock()
	if !ok || f.matchTerm != args.Term || f.ackTerm != args.Term ||
		f.matched != args.PrevLogEntry || f.last != f.matched ||
		f.commit < args.LeaderCommitIndex ||
		now.Sub(f.ackSent) >= quietContact || now.Sub(f.appendAt) >= quietRefresh {
		return raft.AppendEntriesResponse{}, false
	}
	return raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: args.ProtocolVersion},
		Term:      args.Term,
		LastLog:   f.last,
		Success:   true,
	}, true
}

// park marks the follower at target as replicated without a pipeline
// until an append with entries succeeds (noteFollower).
func (g *GroupTransport) park(target raft.ServerAddress) {
	g.followersMu.Lock()
	if f, ok := g.followers[target]; ok {
		f.parked = true
		g.followers[target] = f
	}
	g.followersMu.Unlock()
	g.node.metrics.pipelinesParked.Inc()
}

// parked reports whether AppendEntriesPipeline should refuse the follower
// at target (park).
func (g *GroupTransport) parked(target raft.ServerAddress) bool {
	g.followersMu.Lock()
	defer g.followersMu.Unlock()
	return g.followers[target].parked
}

// countQuiet counts one append answered by quietAnswer.
func (n *Node) countQuiet() {
	n.metrics.quietAppends.Inc()
	n.quiet.n.Add(1)
}

// quietCount counts the appends answered by quietAnswer on this node, for
// QuietAppends (the metric has no cheap reader).
type quietCount struct{ n atomic.Uint64 }

// QuietAppends returns how many appends this node answered itself
// instead of sending (the quiet_appends_total metric).
func (n *Node) QuietAppends() uint64 { return n.quiet.n.Load() }
