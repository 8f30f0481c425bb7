package cluster

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	followerReads *prometheus.CounterVec
	calls         *prometheus.CounterVec
	callsServed   *prometheus.CounterVec
	metaElections prometheus.Counter
	// readIndexRetries and leaderHintsDropped count the times this node's
	// idea of a leader failed a request and it looked for the current one.
	readIndexRetries   prometheus.Counter
	leaderHintsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		followerReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "follower_reads_total",
			Help: "Linearizable reads that reached a follower, by how they were served: local (read index already applied), waited (applied within a few ms), forwarded (to the leader).",
		}, []string{"how"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "calls_total",
			Help: "Node-to-node calls this node made (a write proposed on the channel leader for a client of this node), by call and outcome: ok, refused (the leader answered an error), unreachable (nothing sent), no_answer (outcome unknown), bad_answer.",
		}, []string{"call", "outcome"}),
		callsServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "calls_served_total",
			Help: "Node-to-node calls this node answered, by call (propose, readindex).",
		}, []string{"call"}),
		metaElections: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_fast_elections_total",
			Help: "Elections of the meta group this node started at once because the prober reported the meta leader's node down.",
		}),
		readIndexRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "read_index_retries_total",
			Help: "Read-index calls sent again to the leader as known then, after the leader this node knew failed to answer one (it stopped answering, moved, or none was known).",
		}),
		leaderHintsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "leader_hints_dropped_total",
			Help: "Cached leaders of channels not hosted here that were dropped because their node could not be reached, so the next request asks the replicas again.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.followerReads, m.calls, m.callsServed, m.metaElections, m.readIndexRetries, m.leaderHintsDropped)
	}
	return m
}
