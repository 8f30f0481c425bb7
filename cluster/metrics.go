package cluster

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	followerReads *prometheus.CounterVec
	calls         *prometheus.CounterVec
	callsServed   *prometheus.CounterVec
	callsRefused  *prometheus.CounterVec
	metaElections prometheus.Counter
	// readIndexRetries and leaderHintsDropped count the times this node's
	// idea of a leader failed a request and it looked for the current one.
	readIndexRetries   prometheus.Counter
	leaderHintsDropped prometheus.Counter
	metaSyncs          *prometheus.CounterVec
	metaSyncSeconds    prometheus.Histogram
	metaHashCompares   *prometheus.CounterVec
	metaHashMismatches prometheus.Counter
	// hashComparesSkipped: hashes not compared, too many comparisons
	// running (hashcheck.go).
	hashComparesSkipped prometheus.Counter
	// memberChanges: configuration changes of channel groups this node
	// made as their leader (membership.go).
	memberChanges *prometheus.CounterVec
	// repairsStarted and repairSeconds: replicas the meta leader moved
	// off dead and draining nodes (repair.go).
	repairsStarted *prometheus.CounterVec
	repairSeconds  prometheus.Histogram
	// The meta watch (metawatch.go, metafollow.go): streams this core
	// node serves, the snapshots it sent, and the watches this
	// resource node opened, by outcome.
	metaWatchers       prometheus.Gauge
	metaMembers        prometheus.Gauge
	metaWatchSnapshots prometheus.Counter
	metaWatchOpened    *prometheus.CounterVec
	// uploadBuffer: bytes of upload chunk buffers in use (files.go
	// uploadMemory).
	uploadBuffer prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		followerReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "follower_reads_total",
			Help: "Linearizable reads that reached a follower, by how they were served: local (read index already applied), waited (applied within a few ms), forwarded (to the leader).",
		}, []string{"how"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "calls_total",
			Help: "Route calls this node made (a request it could not answer, sent to the node that can: cluster/route.go), by call (propose, readindex, meta_readindex, hash, get, list, watch, replica_info, create_channel, delete_channel, repair, snapshot, member, change_channel, ...) and outcome: ok, refused (the peer answered an error), unreachable (nothing sent), no_answer (it may have been served), previous_version (the peer takes no route calls), rerouted (sent to another node after the first proved nothing was done).",
		}, []string{"call", "outcome"}),
		callsServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "calls_served_total",
			Help: "Route calls this node served for other nodes, by call (as shardnet_cluster_calls_total).",
		}, []string{"call"}),
		callsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "calls_refused_total",
			Help: "Route calls this node refused to serve because their sender or the client they carry may not make them (cluster/routeauth.go), by call.",
		}, []string{"call"}),
		metaElections: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_fast_elections_total",
			Help: "Elections of the meta group this node started at once because the prober reported the meta leader's node down.",
		}),
		readIndexRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "read_index_retries_total",
			Help: "Read-index calls sent again to the leader as known then, after the leader this node knew failed to answer one (it stopped answering, moved, or none was known).",
		}),
		metaSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_syncs_total",
			Help: "Requests for a channel this node's copy of the meta state did not know, which asked the meta leader for a read index and waited for the copy to reach it, by outcome: ok, unreachable (no meta leader answered: 503 not_ready), behind (the copy did not reach it in time).",
		}, []string{"outcome"}),
		metaSyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_sync_seconds",
			Help:    "How long a successful meta sync (read index and the wait for the local copy) took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		leaderHintsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "leader_hints_dropped_total",
			Help: "Cached leaders of channels not hosted here that were dropped because their node could not be reached, so the next request asks the replicas again.",
		}),
		metaHashCompares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_hash_compares_total",
			Help: "Comparisons of this node's hash of the meta state with the meta voters', by outcome (agree, mismatch, undecided).",
		}, []string{"outcome"}),
		metaHashMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_hash_mismatches_total",
			Help: "Times this node's copy of the meta state was found other than the meta group's majority (it then answers not ready).",
		}),
		hashComparesSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "hash_compares_skipped_total",
			Help: "Hashes of a local replica's state (or of the meta state) not compared with the peers' because too many comparisons were running.",
		}),
		memberChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "member_changes_total",
			Help: "Configuration changes of channel groups this node made as their leader, moving them toward their placement, by op (add_nonvoter, promote, remove, transfer_leadership).",
		}, []string{"op"}),
		repairsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "replica_moves_total",
			Help: "Replicas this node, leading the meta group, moved off a node (a SetPlacement committed), by why: dead (automatic repair), draining (drain), removed (node remove).",
		}, []string{"why"}),
		repairSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "replica_move_seconds",
			Help:    "How long a moved replica's group took to run on its new placement (the leader's configuration lists exactly the placed nodes as voters), from the SetPlacement.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 12),
		}),
		metaWatchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_watchers",
			Help: "Resource nodes following the meta state through a watch this core node serves.",
		}),
		metaMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_members",
			Help: "Servers in the meta group's configuration, voters and non-voters, as the meta leader last read it (0 on other nodes).",
		}),
		metaWatchSnapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_watch_snapshots_total",
			Help: "Whole meta states this core node sent to a watching resource node whose next entry its meta log no longer held.",
		}),
		metaWatchOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "meta_watch_opens_total",
			Help: "Meta watches this resource node opened on a core node, by outcome: ok, refused (the core node answered an error: the cluster runs the previous version, or it cannot serve), failed (unreachable, or the stream broke or went silent).",
		}, []string{"outcome"}),
		uploadBuffer: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "upload_buffer_bytes",
			Help: "Bytes of the upload buffer budget in use: chunks of the uploads this node receives, read and not yet replicated (at most 128 MiB together; uploads beyond it wait).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.followerReads, m.calls, m.callsServed, m.callsRefused, m.metaElections, m.readIndexRetries, m.leaderHintsDropped, m.metaSyncs, m.metaSyncSeconds,
			m.metaHashCompares, m.metaHashMismatches, m.hashComparesSkipped, m.memberChanges, m.repairsStarted, m.repairSeconds,
			m.metaWatchers, m.metaMembers, m.metaWatchSnapshots, m.metaWatchOpened, m.uploadBuffer)
	}
	return m
}
