package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// confirmLeadership returns once a quorum of the group's voters has
// answered, as followers of term, an AppendEntries this replica sent at or
// after since (the moment the read index was taken). That is the check of
// etcd's ReadIndex. raft's VerifyLeader alone is not enough: it counts any
// answer that arrives after it asks, including answers to messages sent
// before, and voters that still remember a leader do vote for a new one
// here (Stand sends TimeoutNow), so a leader resumed after a pause could
// count acknowledgements from before a new leader was elected and serve a
// read that misses writes the new leader acknowledged. VerifyLeader still
// runs: it makes the heartbeats go out now and notices a deposed leader.
func (r *Replica) confirmLeadership(ctx context.Context, term uint64, since time.Time) error {
	for {
		r.trans.Urgent() // the heartbeats must not wait in a batch
		if err := r.wait(ctx, r.raft.VerifyLeader()); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return r.redirect()
			}
			if ctx.Err() != nil {
				return err
			}
			return fmt.Errorf("shard: group %d: verify leader: %w", r.GroupID, err)
		}
		if r.raft.CurrentTerm() != term {
			return ErrNoLeader
		}
		if r.quorumAckedSince(term, since) {
			return nil
		}
		// Some answers VerifyLeader counted were to older messages: ask
		// again, until the fresh ones are in or the request's time is up.
		r.m.metrics.readConfirmRetries.Inc()
		select {
		case <-ctx.Done():
			return fmt.Errorf("shard: group %d: confirm leadership for a read: %w", r.GroupID, ctx.Err())
		case <-r.done:
			return ErrStopped
		case <-time.After(time.Millisecond):
		}
	}
}

// quorumAckedSince counts this replica and every voter whose latest answer
// as a follower of term was to a message sent at or after since.
func (r *Replica) quorumAckedSince(term uint64, since time.Time) bool {
	cfg := r.raft.GetConfiguration()
	if cfg.Error() != nil {
		return false
	}
	voters, acked := 0, 0
	for _, s := range cfg.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == r.serverID || r.trans.AckedSince(s.Address, term, since) {
			acked++
		}
	}
	return acked > voters/2
}
