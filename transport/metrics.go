package transport

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RPC kinds as metric labels. Heartbeats are counted apart from
// AppendEntries because they are most of an idle node's traffic. No group
// label: a node hosts 1000+ groups.
const (
	labelAppendEntries = iota
	labelHeartbeat
	labelRequestVote
	labelRequestPreVote
	labelInstallSnapshot
	labelTimeoutNow
	numLabels
)

var labelNames = [numLabels]string{
	labelAppendEntries:   "append_entries",
	labelHeartbeat:       "heartbeat",
	labelRequestVote:     "request_vote",
	labelRequestPreVote:  "request_pre_vote",
	labelInstallSnapshot: "install_snapshot",
	labelTimeoutNow:      "timeout_now",
}

type metrics struct {
	sent              [numLabels]prometheus.Counter
	errors            [numLabels]prometheus.Counter
	refused           [numLabels]prometheus.Counter
	handshakeFailures prometheus.Counter
	sessions          prometheus.Gauge
	heartbeatBatches  prometheus.Counter
	connWrites        prometheus.Counter
	quietAppends      prometheus.Counter
	quietHeartbeats   prometheus.Counter
	pipelines         prometheus.Gauge
	pipelinesParked   prometheus.Counter
}

// newMetrics creates the node's collectors and registers them when reg is
// non-nil. The per-label counters are resolved once here so the RPC path
// does no label lookup.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "shardnet", Subsystem: "transport", Name: "rpcs_sent_total",
		Help: "Raft RPCs this node sent, by type (pipelined AppendEntries included).",
	}, []string{"type"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "shardnet", Subsystem: "transport", Name: "rpc_errors_total",
		Help: "Raft RPCs this node sent that failed (network, timeout or remote error), by type.",
	}, []string{"type"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "shardnet", Subsystem: "transport", Name: "rpcs_refused_total",
		Help: "Raft RPCs this node refused, by type: the sender claimed another node's server id or is not a voter of the group (auth.go).",
	}, []string{"type"})
	m := &metrics{
		handshakeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "handshake_failures_total",
			Help: "Cluster connections (inbound or outbound) dropped because the peer did not prove the cluster key, failed mutual TLS (no certificate, another CA, expired), or spoke another protocol.",
		}),
		heartbeatBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "heartbeat_batches_sent_total",
			Help: "Frames that carried batched heartbeats (each heartbeat is also counted in rpcs_sent_total{type=\"heartbeat\"}).",
		}),
		connWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "conn_writes_total",
			Help: "Writes to cluster connections; each carries every frame of every group queued meanwhile (conn.go).",
		}),
		quietAppends: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "quiet_appends_total",
			Help: "AppendEntries without entries that told a follower nothing it did not know, answered by this node instead of sent (quiet.go); not in rpcs_sent_total.",
		}),
		quietHeartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "quiet_heartbeats_total",
			Help: "Heartbeats of idle groups answered by this node as the follower last answered, because a real one went out within the group's quiet interval and the follower's node answers probes (quiet.go); not in rpcs_sent_total.",
		}),
		pipelines: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "pipelines",
			Help: "Open AppendEntries pipelines from this node's leaders to their followers; a follower of a group without writes has none (parked, quiet.go).",
		}),
		pipelinesParked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "pipelines_parked_total",
			Help: "Pipelines closed because their group sent no entries for a while (quiet.go); the next write opens one again.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "transport", Name: "sessions",
			Help: "Open multiplexed cluster connections, inbound and outbound.",
		}),
	}
	for i, name := range labelNames {
		m.sent[i] = sent.WithLabelValues(name)
		m.errors[i] = errs.WithLabelValues(name)
		m.refused[i] = refused.WithLabelValues(name)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{sent, errs, refused, m.handshakeFailures, m.sessions, m.heartbeatBatches, m.connWrites, m.quietAppends, m.quietHeartbeats, m.pipelines, m.pipelinesParked} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("transport: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
