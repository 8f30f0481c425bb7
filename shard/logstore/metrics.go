package logstore

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the shared log store. None carries a group label: with 1000
// groups per node that would be 1000 series per metric on the hot path.
type metrics struct {
	reg prometheus.Registerer // nil: collectors exist but are not exported

	appends       prometheus.Counter
	appendBatches prometheus.Counter
	appendSeconds prometheus.Histogram
	writeStalls   prometheus.Counter
	walSyncs      prometheus.CounterFunc
}

func newMetrics(reg prometheus.Registerer, pace *syncPace) (*metrics, error) {
	const ns, sub = "shardnet", "logstore"
	m := &metrics{
		reg: reg,
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "appends_total",
			Help: "Raft log entries written (all groups).",
		}),
		appendBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "append_batches_total",
			Help: "StoreLog/StoreLogs calls, each one synced pebble batch (all groups).",
		}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "append_duration_seconds",
			Help: "Latency of StoreLog/StoreLogs including the WAL fsync.",
			// 50 µs (a lone fsync on a fast disk) to ~1.6 s (a write stall).
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		writeStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_stalls_total",
			Help: "pebble write stalls; each one blocks the appends of every group on the node.",
		}),
		// Beside append_batches_total it says how many groups' appends
		// share one fsync (group commit and pace.go).
		walSyncs: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "wal_syncs_total",
			Help: "WAL fsyncs of the log store (all groups); each makes every append committed before it durable.",
		}, func() float64 { return float64(pace.syncs.Load()) }),
	}
	if reg == nil {
		return m, nil
	}
	var registered []prometheus.Collector
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, r := range registered {
				reg.Unregister(r)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register metrics: already registered (is another log store open on this registry?): %w", err)
			}
			return nil, fmt.Errorf("register metrics: %w", err)
		}
		registered = append(registered, c)
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.appends, m.appendBatches, m.appendSeconds, m.writeStalls, m.walSyncs}
}

// unregister lets a node close and reopen its log store on the same registry.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
