package cluster

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	followerReads *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		followerReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "cluster", Name: "follower_reads_total",
			Help: "Linearizable reads that reached a follower, by how they were served: local (read index already applied), waited (applied within a few ms), forwarded (to the leader).",
		}, []string{"how"}),
	}
	if reg != nil {
		reg.MustRegister(m.followerReads)
	}
	return m
}
