package cluster

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/shard"
)

// The meta group's failover shortens its timers to its lease. raft refuses
// any timer below the lease, so with the channel groups' timing (a longer
// lease) the shortening was silently refused and the meta group waited out
// its long heartbeat timeout after losing its leader.
func TestMetaFailoverTimersTakeEffect(t *testing.T) {
	timing := metaTiming(shard.RaftTiming{})
	if timing.HeartbeatTimeout > 2*timing.LeaderLeaseTimeout || timing.LeaderLeaseTimeout > timing.HeartbeatTimeout {
		t.Fatalf("meta timing %+v: want a heartbeat timeout of one to two leases", timing)
	}
	// A configured field wins over the default; the rest are filled.
	if got := metaTiming(shard.RaftTiming{CommitTimeout: 7}); got.CommitTimeout != 7 || got.HeartbeatTimeout != timing.HeartbeatTimeout {
		t.Fatalf("metaTiming kept %v and filled %v", got.CommitTimeout, got.HeartbeatTimeout)
	}

	conf := timing.RaftConfig("a", hclog.NewNullLogger())
	_, trans := raft.NewInmemTransport("a")
	store := raft.NewInmemStore()
	r, err := raft.NewRaft(conf, &raft.MockFSM{}, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown()

	if err := shard.ShortenTimers(r, timing.LeaderLeaseTimeout, func() bool { return true }); err != nil {
		t.Fatalf("ShortenTimers to the meta lease: %v", err)
	}
	if got := r.ReloadableConfig().HeartbeatTimeout; got != timing.LeaderLeaseTimeout {
		t.Fatalf("heartbeat timeout after ShortenTimers = %v, want %v", got, timing.LeaderLeaseTimeout)
	}
	// Below the lease raft refuses, and the caller hears of it.
	if err := shard.ShortenTimers(r, timing.LeaderLeaseTimeout/2, func() bool { return true }); err == nil {
		t.Fatal("ShortenTimers below the lease returned no error")
	}
}
