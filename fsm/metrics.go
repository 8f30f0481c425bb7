package fsm

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are node-wide: with 1000 channels per node a per-channel label on
// the apply path would be the largest series set of the process.
type metrics struct {
	appliedEntries    prometheus.Counter
	applyBatches      prometheus.Counter
	applyBatchSeconds prometheus.Histogram
	keyIndexBytes     prometheus.Gauge
	keyIndexChannels  prometheus.Gauge
	hashedKeys        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appliedEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "fsm", Name: "applied_entries_total",
			Help: "Raft log entries applied by channel state machines (entries skipped on restart replay excluded).",
		}),
		applyBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "fsm", Name: "apply_batches_total",
			Help: "ApplyBatch calls that committed a pebble batch.",
		}),
		applyBatchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shardnet", Subsystem: "fsm", Name: "apply_batch_seconds",
			Help:    "Time to apply one Raft batch, including its pebble commit.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 9), // 50µs .. ~3.3s
		}),
		keyIndexBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "fsm", Name: "key_index_bytes",
			Help: "Memory charged to the channels' in-memory key indexes (bounded by the node's key index budget).",
		}),
		hashedKeys: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "fsm", Name: "hash_check_keys_total",
			Help: "Keys read to hash channel states for hash checks (the check's I/O).",
		}),
		keyIndexChannels: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "fsm", Name: "key_index_channels",
			Help: "Open channel replicas whose writes use an in-memory key index (the others read their keys from the state).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.appliedEntries, err = register(reg, m.appliedEntries)
	if err != nil {
		return nil, err
	}
	m.applyBatches, err = register(reg, m.applyBatches)
	if err != nil {
		return nil, err
	}
	m.applyBatchSeconds, err = register(reg, m.applyBatchSeconds)
	if err != nil {
		return nil, err
	}
	m.keyIndexBytes, err = register(reg, m.keyIndexBytes)
	if err != nil {
		return nil, err
	}
	m.keyIndexChannels, err = register(reg, m.keyIndexChannels)
	if err != nil {
		return nil, err
	}
	m.hashedKeys, err = register(reg, m.hashedKeys)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same name (a store reopened on the same registry keeps counting).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("fsm: register metrics: %w", err)
	}
	return c, nil
}
