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
//     every HeartbeatTimeout/10 to /5) sent within quietContact; or, in a
//     group with quiet heartbeats, within its quiet interval, its node
//     answering probes (inContact);
//   - a real append went out within quietRefresh;
//   - that append's answer came over the session to the follower's node
//     that is live now (peer.epoch), and no exchange with the follower
//     failed since (forgetFollower). A follower whose node restarted has
//     lost the commit index it was told (raft learns it again from the
//     leader only), and is reached over a new session: its next append
//     goes on the wire, else its applied index would wait quietRefresh
//     for the leader's next real append, and a read index served there
//     with it.
//
// What the local answer may and may not do. Raft counts it as contact with
// the follower (the leader lease): quietContact (with quiet heartbeats, the
// probes' second) bounds by how much a leader cut off from its followers
// outlives its lease. It carries no entries, so
// it moves no match index and commits nothing. It is not counted by
// AckedSince (noteFollower is not called), so a read is never confirmed by
// it: ConfirmLeadership waits for answers that crossed the wire.
// quietRefresh bounds what a follower that lost its commit index without
// the session or an exchange noticing (a replica closed and opened again
// between two of the leader's messages, its node staying up) waits to
// learn it again.
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
	quietRefresh = 30 * time.Second
)

// pipelineIdle is a variable for the tests only.
var pipelineIdle = 10 * time.Second

// noteAppended records, in the follower's entry, a real successful answer
// of its term to the append args (noteFollower): the follower's log now
// matches this leader's through args' last entry, and it took
// min(LeaderCommitIndex, its last index) as its commit index, its log
// reaching at least that entry.
func (f *followerLog) noteAppended(args *raft.AppendEntriesRequest, epoch uint64, now time.Time) {
	matched := args.PrevLogEntry + uint64(len(args.Entries))
	f.matchTerm, f.matched, f.commit, f.appendAt = args.Term, matched, min(args.LeaderCommitIndex, matched), now
	f.appendEpoch = epoch
}

// quietAnswer returns the answer the follower at target would give to args
// and true when args tells it nothing new (see above); false means send it.
func (g *GroupTransport) quietAnswer(target raft.ServerAddress, args *raft.AppendEntriesRequest) (raft.AppendEntriesResponse, bool) {
	if len(args.Entries) != 0 || isHeartbeat(args) {
		return raft.AppendEntriesResponse{}, false
	}
	now := time.Now()
	f, ok := g.follower(target)
	if !ok || f.matchTerm != args.Term || f.ackTerm != args.Term ||
		f.matched != args.PrevLogEntry || f.last != f.matched ||
		f.commit < args.LeaderCommitIndex ||
		f.appendEpoch == 0 || f.appendEpoch != g.node.sessionEpoch(target) ||
		!g.inContact(target, f, now) || now.Sub(f.appendAt) >= quietRefresh {
		return raft.AppendEntriesResponse{}, false
	}
	return answerAs(args, f.last), true
}

// follower returns what this replica knows of the follower at target.
func (g *GroupTransport) follower(target raft.ServerAddress) (followerLog, bool) {
	g.followersMu.Lock()
	defer g.followersMu.Unlock()
	f, ok := g.followers[target]
	return f, ok
}

// answerAs is the "yes" a follower of args' term whose log ends at last
// gives to args.
func answerAs(args *raft.AppendEntriesRequest, last uint64) raft.AppendEntriesResponse {
	return raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: args.ProtocolVersion},
		Term:      args.Term,
		LastLog:   last,
		Success:   true,
	}
}

// inContact reports whether the follower f at target counts as in contact
// for a local answer: it answered a message of its term sent within
// quietContact, or, with quiet heartbeats, within twice the quiet interval
// (a real heartbeat goes out once the last is a quiet interval old, and
// raft's next one comes up to a fifth of its heartbeat timeout later) and
// its node answers the transport's probes.
func (g *GroupTransport) inContact(target raft.ServerAddress, f followerLog, now time.Time) bool {
	if now.Sub(f.ackSent) < quietContact {
		return true
	}
	every := time.Duration(g.quietBeat.Load())
	return every > 0 && now.Sub(f.ackSent) < 2*every && g.node.PeerHealthy(string(target))
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
	f, _ := g.follower(target)
	return f.parked
}

// QuietHeartbeats returns how many heartbeats this node answered itself
// instead of sending (the quiet_heartbeats_total metric).
func (n *Node) QuietHeartbeats() uint64 { return n.quiet.beats.Load() }

// countQuiet counts one append answered by quietAnswer.
func (n *Node) countQuiet() {
	n.metrics.quietAppends.Inc()
	n.quiet.n.Add(1)
}

// quietCount counts the appends answered by quietAnswer on this node, for
// QuietAppends (the metric has no cheap reader).
type quietCount struct{ n, beats atomic.Uint64 }

// QuietAppends returns how many appends this node answered itself
// instead of sending (the quiet_appends_total metric).
func (n *Node) QuietAppends() uint64 { return n.quiet.n.Load() }

// Quiet heartbeats. After the empty appends, heartbeats were most of what
// an idle group costs: raft's leader sends each follower one every
// HeartbeatTimeout/10 to /5 (500-1000 ms for a channel), and each crosses
// the wire, wakes the follower's handler and comes back. A follower only
// needs one within its heartbeat timeout to keep from electing. So a group
// given a quiet interval (SetQuietHeartbeats) sends a follower a real
// heartbeat only when its last real one is that old, and answers the ones
// in between itself, as the follower answered the last one, when all of
// these hold:
//   - the follower answered "yes" to a real heartbeat of this term sent
//     within the quiet interval;
//   - the follower's node answers the transport's probes (a yamux ping
//     every 250 ms over the same connection, PeerHealthy: within the last
//     second) and that heartbeat went out on the session live now;
//   - the term has run quietAfterTerm since the follower first answered
//     in it: failover (shard/failover.go) shortens the followers' timers to
//     the lease for a few seconds around a leader change, and those must
//     hear every heartbeat;
//   - nobody confirms a read on this group (Urgent): a read's round goes
//     on the wire, and only answers that crossed it count (AckedSince; a
//     local answer calls no noteFollower).
//
// What a local answer does in raft: it counts as contact for the leader
// lease, as a quiet append's does. The probe bounds that: a leader cut off
// from a follower's node stops answering for it within a second of the
// last probe answer, and its lease runs out as before, at most a second
// later. Anything about the group itself (a follower's replica that
// restarted, a higher term) shows in the next real heartbeat, at most the
// quiet interval (plus one of raft's heartbeat intervals) away.
var quietAfterTerm = 10 * time.Second // a variable for the tests only

// SetQuietHeartbeats makes the group send each follower a real heartbeat
// at least every every and answer those in between itself (quiet.go,
// "Quiet heartbeats"); 0, the default, sends every one. every must leave
// room under the followers' heartbeat timeout for one heartbeat interval
// and a lost heartbeat.
func (g *GroupTransport) SetQuietHeartbeats(every time.Duration) {
	g.quietBeat.Store(int64(every))
}

// quietHeartbeat returns the answer the follower at target gave its last
// real heartbeat, and true when args may be answered with it (see above).
func (g *GroupTransport) quietHeartbeat(target raft.ServerAddress, args *raft.AppendEntriesRequest) (raft.AppendEntriesResponse, bool) {
	every := time.Duration(g.quietBeat.Load())
	if every <= 0 || g.isUrgent() {
		return raft.AppendEntriesResponse{}, false
	}
	now := time.Now()
	f, ok := g.follower(target)
	if !ok || f.beatTerm != args.Term || now.Sub(f.beatAt) >= every || now.Sub(f.termAt) < quietAfterTerm {
		return raft.AppendEntriesResponse{}, false
	}
	if !g.node.PeerHealthy(string(target)) || f.beatEpoch == 0 || f.beatEpoch != g.node.sessionEpoch(target) {
		return raft.AppendEntriesResponse{}, false
	}
	return answerAs(args, f.last), true
}
