package shard

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	replicas        prometheus.Gauge
	proposals       prometheus.Counter
	proposalErrors  *prometheus.CounterVec
	proposalSeconds prometheus.Histogram
	proposalBatches prometheus.Counter
	readBarriers    prometheus.Counter
	// readConfirmRetries: reads whose first heartbeat round was confirmed
	// by raft with answers to older messages (confirm.go).
	readConfirmRetries prometheus.Counter
	fastElections      prometheus.Counter
	leaderMoves        *prometheus.CounterVec
	hashChecks         prometheus.Counter
	hashCompares       *prometheus.CounterVec
	hashMismatches     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "replicas",
			Help: "Channel replicas running on this node.",
		}),
		proposals: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "proposals_total",
			Help: "Channel commands committed and applied through this node as leader.",
		}),
		proposalErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "proposal_errors_total",
			Help: "Proposals that failed, by reason (overloaded, unknown).",
		}, []string{"reason"}),
		proposalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "proposal_seconds",
			Help:    "Time from proposal to apply on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		proposalBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "proposal_batches_total",
			Help: "Batches of proposals handed to Raft together (shard/batch.go); proposals_total / this is the mean batch.",
		}),
		readConfirmRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "read_confirm_retries_total",
			Help: "Heartbeat rounds a linearizable read asked for again because raft counted answers to messages sent before the read began.",
		}),
		readBarriers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "read_barriers_total",
			Help: "Linearizable read barriers (heartbeat rounds, no log writes).",
		}),
		fastElections: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "fast_elections_total",
			Help: "Elections this node started at once because the prober said the group's leader node was gone (shard/failover.go).",
		}),
		leaderMoves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "leader_moves_total",
			Help: "Leaderships this node handed back to a group's preferred leader (shard/rebalance.go), by outcome (ok, failed).",
		}, []string{"outcome"}),
		hashChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "hash_checks_total",
			Help: "Hash checks this node proposed as a group's leader (shard/hashcheck.go).",
		}),
		hashCompares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "hash_compares_total",
			Help: "Comparisons of a local replica's state hash with its peers', by outcome (agree, mismatch, undecided).",
		}, []string{"outcome"}),
		hashMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "shard", Name: "replica_hash_mismatches_total",
			Help: "Local replicas marked corrupt because their state hash differed from their group's majority.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.replicas, m.proposals, m.proposalErrors, m.proposalSeconds, m.proposalBatches, m.readBarriers, m.readConfirmRetries, m.fastElections, m.leaderMoves,
			m.hashChecks, m.hashCompares, m.hashMismatches)
	}
	return m
}
