package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard/logstore"
	"github.com/shardnet/shardnet/transport"
)

// ReadLevel is how strongly a read must reflect the latest committed writes
// (docs/design.md "D7").
type ReadLevel int

const (
	// Linearizable reads see every write acknowledged before they started.
	Linearizable ReadLevel = iota
	// Lease reads are linearizable reads that may skip the heartbeat round
	// while a leader lease holds; this release always takes the round.
	Lease
	// Stale reads are served by any replica from whatever it has applied.
	Stale
)

// Replica is one channel replica hosted on this node: a Raft group member
// and its state machine.
type Replica struct {
	GroupID  uint64
	Channel  string
	serverID raft.ServerID

	raft  *raft.Raft
	fsm   *fsm.Channel
	logs  *logstore.Store // the group's log, under raft's LogCache
	trans *transport.GroupTransport
	snaps raft.SnapshotStore
	m     *Manager
	// bootstrapped: this start wrote the group's first configuration.
	bootstrapped bool

	barrierMu sync.Mutex
	readyTerm atomic.Uint64 // the term in which a Barrier completed (docs/raft-notes.md "R2")
	// fsmIndex caches the last answer of fsmIndexAt: concurrent reads
	// share a read index, and the answer for a committed index never
	// changes.
	fsmIndex atomic.Pointer[[2]uint64]

	inflight      atomic.Int64
	inflightBytes atomic.Int64
	batch         batcher

	// corrupt is set once a hash check found this replica's state other
	// than its group's majority (hashcheck.go); corruptMu orders marking
	// and repairing; a comparison of an index at or below repaired is
	// about the state the repair replaced and changes nothing.
	// disagreeing are the peers the latest check found so.
	corrupt     atomic.Pointer[Corruption]
	corruptMu   sync.Mutex
	repaired    uint64 // under corruptMu: the applied index of the last repair
	disagreeing atomic.Pointer[[]raft.ServerID]

	shortTimers atomic.Bool // failover timers in force (failover.go)
	stopped     atomic.Bool
	done        chan struct{} // closed once the replica stopped
	doneOnce    sync.Once
}

// wait is AwaitFuture until the replica stops.
func (r *Replica) wait(ctx context.Context, f raft.Future) error {
	return AwaitFuture(ctx, f, r.done)
}

// AwaitFuture returns f's error; ctx's error once ctx ends; or
// raft.ErrRaftShutdown once stopped is closed: hashicorp/raft never answers
// a future that was still queued for its main loop when it shut down
// (Apply, Barrier, VerifyLeader), and a caller waiting on it would wait
// forever. Its waiting goroutine then stays blocked, one per such future,
// after the group is gone (or, after ctx ended, until raft answers).
func AwaitFuture(ctx context.Context, f raft.Future, stopped <-chan struct{}) error {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-stopped:
		select {
		case err := <-errc:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// FSM returns the replica's state machine, for reads.
func (r *Replica) FSM() *fsm.Channel { return r.fsm }

// Raft exposes the group for operations the manager does not wrap
// (membership changes, stats).
func (r *Replica) Raft() *raft.Raft { return r.raft }

// Propose submits an encoded channel command and waits until it is committed
// and applied by this (leader) replica. Errors say whether the command may
// have been applied: ErrOutcomeUnknown when it may, a RedirectError or
// ErrOverloaded when it was not.
func (r *Replica) Propose(ctx context.Context, cmd []byte) (*fsm.Result, error) {
	if err := r.admit(cmd); err != nil {
		return nil, err
	}
	defer r.release(int64(len(cmd)))
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	var p *proposal
	for {
		p = &proposal{cmd: cmd, done: make(chan struct{})}
		p.deadline, _ = ctx.Deadline()
		r.batch.submit(p)
		select {
		case <-p.done:
		case <-ctx.Done():
			if p.state.CompareAndSwap(proposalQueued, proposalAbandoned) {
				// Still queued: never sent, so the caller may send it again.
				return nil, ctx.Err()
			}
			<-p.done // sent: its outcome is coming (raft bounds the wait)
		}
		if !errors.Is(p.err, raft.ErrLeadershipTransferInProgress) {
			break
		}
		// Refused before it was appended: this leader is handing over
		// (a shutdown, a rebalance). Redirect to the new leader once it
		// has one, or send again if the hand-over failed.
		if err := r.afterTransfer(ctx); err != nil {
			return nil, err
		}
	}
	f := p.future
	if err := p.err; err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			// Refused before it was appended: safe to send elsewhere.
			return nil, r.redirect()
		case errors.Is(err, raft.ErrEnqueueTimeout):
			r.m.metrics.proposalErrors.WithLabelValues("overloaded").Inc()
			return nil, ErrOverloaded
		default:
			r.m.metrics.proposalErrors.WithLabelValues("unknown").Inc()
			return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
		}
	}
	r.m.metrics.proposals.Inc()
	r.m.metrics.proposalSeconds.Observe(time.Since(start).Seconds())
	res, ok := f.Response().(*fsm.Result)
	if !ok || res == nil {
		return nil, fmt.Errorf("shard: group %d: unexpected apply response %T", r.GroupID, f.Response())
	}
	return res, nil
}

// afterTransfer waits while this replica still leads but raft refuses new
// entries because it is handing its leadership over. It returns the
// redirect once another replica leads (ErrNoLeader while none does yet), or
// nil when this one still leads after the hand-over's time: raft gave up
// and takes entries again. Only entries raft refused, never appended, come
// here, so a caller may send them wherever this says.
func (r *Replica) afterTransfer(ctx context.Context) error {
	// raft bounds a hand-over by the election timeout.
	limit := time.NewTimer(r.raft.ReloadableConfig().ElectionTimeout + 100*time.Millisecond)
	defer limit.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for r.raft.State() == raft.Leader {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return ErrNoLeader
		case <-limit.C:
			return nil
		case <-tick.C:
		}
	}
	return r.redirect()
}

func enqueueTimeout(ctx context.Context) time.Duration {
	dl, _ := ctx.Deadline()
	return enqueueTimeoutUntil(dl)
}

// enqueueTimeoutUntil is how long raft may take to accept an entry due by
// dl (zero: no deadline).
func enqueueTimeoutUntil(dl time.Time) time.Duration {
	if dl.IsZero() {
		return 10 * time.Second
	}
	return max(time.Until(dl), time.Millisecond)
}

// admit runs the shard layer's admission checks on a proposal, one step
// each and in this order, before anything is queued: leadership, the
// replica's soundness, the cluster version the command needs, free disk,
// and room among the proposals in flight (which it reserves: the caller
// releases it). Every refusal means nothing was proposed. The checks of
// the layers above run before this one: the request rate in server
// (server.go), the channel's quota in cluster (admitQuota).
func (r *Replica) admit(cmd []byte) error {
	if r.raft.State() != raft.Leader {
		return r.redirect()
	}
	if err := r.errIfCorrupt(); err != nil {
		// The replica hands its leadership away.
		return err
	}
	if v := fsm.EntryVersion(cmd); v > 1 {
		if err := fsm.CheckVersion(v, r.m.clusterVersion()); err != nil {
			return fmt.Errorf("shard: %w", err)
		}
	}
	if r.m.disk != nil && r.m.disk.full.Load() {
		r.m.metrics.proposalErrors.WithLabelValues("disk_full").Inc()
		return ErrDiskFull
	}
	if !r.acquire(int64(len(cmd))) {
		r.m.metrics.proposalErrors.WithLabelValues("overloaded").Inc()
		return ErrOverloaded
	}
	return nil
}

func (r *Replica) acquire(n int64) bool {
	maxN, maxB := int64(r.m.cfg.MaxInFlight), r.m.cfg.MaxInFlightBytes
	if c := r.inflight.Add(1); maxN > 0 && c > maxN {
		r.inflight.Add(-1)
		return false
	}
	if b := r.inflightBytes.Add(n); maxB > 0 && b > maxB && b != n {
		r.inflight.Add(-1)
		r.inflightBytes.Add(-n)
		return false
	}
	return true
}

func (r *Replica) release(n int64) {
	r.inflight.Add(-1)
	r.inflightBytes.Add(-n)
}

// redirect says where the leader is, or that there is none.
func (r *Replica) redirect() error {
	addr, id := r.raft.LeaderWithID()
	if id == "" || id == r.serverID {
		return ErrNoLeader
	}
	return &RedirectError{Err: ErrNotLeader, NodeID: NodeOf(id), Addr: string(addr)}
}

// ReadBarrier returns once a read of this replica's FSM is allowed at level:
// for Linearizable (and Lease), once this replica leads, has confirmed a
// read index (ReadIndex) and its state machine has reached it
// (WaitIndex). A non-leader answers with a RedirectError to the leader. A
// replica marked corrupt refuses every level with ErrReplicaCorrupt.
func (r *Replica) ReadBarrier(ctx context.Context, level ReadLevel) error {
	if err := r.errIfCorrupt(); err != nil {
		return err
	}
	if level == Stale {
		return nil
	}
	idx, err := r.ReadIndex(ctx)
	if err != nil {
		return err
	}
	return r.WaitIndex(ctx, idx)
}

// ReadIndex returns the index a linearizable read must wait for, as etcd's
// ReadIndex does (docs/raft-notes.md "R2"): one Barrier per leadership term (a fresh
// leader's commit index can trail writes the old leader acknowledged),
// then per read the commit index, confirmed by a heartbeat round
// (VerifyLeader, coalesced across concurrent reads, no log write) in the
// same term. Not the state machine's applied index: raft applies on the
// leader asynchronously, so a follower can apply a committed entry before
// the leader's state machine does and serve it, and a later read of the
// leader's applied index would miss it. Whoever serves the read, this
// leader included, waits for its state machine to reach the index
// (WaitIndex). Only the leader answers; others redirect.
func (r *Replica) ReadIndex(ctx context.Context) (uint64, error) {
	if r.raft.State() != raft.Leader {
		return 0, r.redirect()
	}
	term := r.raft.CurrentTerm()
	if r.readyTerm.Load() != term {
		if err := r.barrier(ctx, term); err != nil {
			return 0, err
		}
	}
	idx := r.raft.CommitIndex()
	// Confirmed only by answers to messages sent after the index was
	// taken (confirm.go).
	if err := r.confirmLeadership(ctx, term, time.Now()); err != nil {
		return 0, err
	}
	r.m.metrics.readBarriers.Inc()
	return idx, nil
}

// WaitIndex returns once this replica's state machine holds every entry up
// to idx, a read index its leader answered, or ctx's error. It first waits
// until this replica knows idx to be committed (on a follower, the entries
// at or below idx may otherwise still be replaced), then for the state
// machine to apply the last entry at or below idx that it is handed at all:
// no-op and barrier entries never reach it (logstore.LastFSMIndex).
func (r *Replica) WaitIndex(ctx context.Context, idx uint64) error {
	if r.fsm.Applied() >= idx {
		return nil
	}
	if r.raft.CommitIndex() < idx {
		// Only a follower gets here: it learns the commit index with the
		// leader's next append. raft offers no notification of it.
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for r.raft.CommitIndex() < idx {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-r.done:
				return ErrStopped
			case <-tick.C:
			}
		}
	}
	target, err := r.fsmIndexAt(idx)
	if err != nil {
		return err
	}
	return r.fsm.WaitApplied(ctx, target)
}

// fsmIndexAt is the index the state machine reaches once it has applied
// every committed entry up to idx.
func (r *Replica) fsmIndexAt(idx uint64) (uint64, error) {
	if c := r.fsmIndex.Load(); c != nil && c[0] == idx {
		return c[1], nil
	}
	target, err := r.logs.LastFSMIndex(idx)
	if err != nil {
		return 0, fmt.Errorf("shard: group %d: read index %d: %w", r.GroupID, idx, err)
	}
	r.fsmIndex.Store(&[2]uint64{idx, target})
	return target, nil
}

func (r *Replica) barrier(ctx context.Context, term uint64) error {
	r.barrierMu.Lock()
	defer r.barrierMu.Unlock()
	if r.readyTerm.Load() == term {
		return nil
	}
	for {
		err := r.wait(ctx, r.raft.Barrier(enqueueTimeout(ctx)))
		if err == nil {
			break
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return r.redirect()
		}
		if !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return fmt.Errorf("shard: group %d: barrier: %w", r.GroupID, err)
		}
		if err := r.afterTransfer(ctx); err != nil {
			return err
		}
	}
	if r.raft.CurrentTerm() != term {
		return ErrNoLeader
	}
	r.readyTerm.Store(term)
	return nil
}

// Lag is how long ago this replica last heard from its leader (0 on the
// leader itself); stale reads report it.
func (r *Replica) Lag() time.Duration {
	if r.raft.State() == raft.Leader {
		return 0
	}
	lc := r.raft.LastContact()
	if lc.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(lc)
}

// ReplicaInfo is a snapshot of a replica's Raft state.
type ReplicaInfo struct {
	GroupID     uint64
	Channel     string
	ServerID    string
	State       string
	Leader      string // node id of the leader, "" if unknown
	LeaderAddr  string
	Term        uint64
	Applied     uint64 // the FSM's own applied index
	LastIndex   uint64
	CommitIndex uint64
	Voters      []string // node ids
	NonVoters   []string
	LastContact time.Time
	Keys        uint64 // live keys in this replica's state
	Bytes       uint64 // their keys' and values' bytes
	// Corrupt is set when a hash check found this replica's state other
	// than its group's majority (hashcheck.go).
	Corrupt *Corruption `json:",omitempty"`
	// ConfigServers are the server ids of the replica's latest
	// configuration, voters and non-voters: they tell an old incarnation
	// of a node from its new one, which Voters cannot.
	ConfigServers []string `json:",omitempty"`
	// Bootstrapped says the replica's start (since the node's) wrote the
	// group's first configuration: only replicas of the placement a
	// channel was created with ever do (cluster/DESIGN.md "Membership
	// changes").
	Bootstrapped bool `json:",omitempty"`
}

// Info reports the replica's current Raft state.
func (r *Replica) Info() ReplicaInfo {
	addr, id := r.raft.LeaderWithID()
	info := ReplicaInfo{
		GroupID:     r.GroupID,
		Channel:     r.Channel,
		ServerID:    string(r.serverID),
		State:       r.raft.State().String(),
		LeaderAddr:  string(addr),
		Term:        r.raft.CurrentTerm(),
		Applied:     r.fsm.Applied(),
		LastIndex:   r.raft.LastIndex(),
		CommitIndex: r.raft.CommitIndex(),
		LastContact: r.raft.LastContact(),
		Corrupt:     r.corrupt.Load(),
	}
	if id != "" {
		info.Leader = NodeOf(id)
	}
	info.Bootstrapped = r.bootstrapped
	st := r.fsm.Stats()
	info.Keys, info.Bytes = st.Keys, st.Bytes
	if f := r.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				info.Voters = append(info.Voters, NodeOf(s.ID))
			} else {
				info.NonVoters = append(info.NonVoters, NodeOf(s.ID))
			}
			info.ConfigServers = append(info.ConfigServers, string(s.ID))
		}
	}
	return info
}
