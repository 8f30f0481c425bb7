package chunk

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are node-wide, without a channel label: the store is shared by
// all the node's channels and does not know which one a chunk serves.
// Gauges move by Add/Sub, so stores sharing a registry (nodes of one test
// process, a store reopened) sum instead of overwriting each other.
type metrics struct {
	storedBytes    prometheus.Gauge
	chunks         prometheus.Gauge
	puts           *prometheus.CounterVec
	putBytes       prometheus.Counter
	putsRefused    *prometheus.CounterVec
	verifyFailures prometheus.Counter
	deletes        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		storedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "stored_bytes",
			Help: "Bytes of chunks in the node's chunk store (after deduplication).",
		}),
		chunks: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "chunks",
			Help: "Chunks in the node's chunk store.",
		}),
		puts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "puts_total",
			Help: "Chunks put, by result: stored (new), duplicate (already held, deduplicated).",
		}, []string{"result"}),
		putBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "put_bytes_total",
			Help: "Bytes received by successful puts, duplicates included.",
		}),
		putsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "puts_refused_total",
			Help: "Puts that stored nothing, by reason: mismatch, too_large, disk_full, error.",
		}, []string{"reason"}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "verify_failures_total",
			Help: "Stored chunks found not to hash to their id (Verify or a verifying read).",
		}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "chunk", Name: "deletes_total",
			Help: "Chunks deleted (Delete, Collect) or removed as corrupt.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.storedBytes, err = register(reg, m.storedBytes); err != nil {
		return nil, err
	}
	if m.chunks, err = register(reg, m.chunks); err != nil {
		return nil, err
	}
	if m.puts, err = register(reg, m.puts); err != nil {
		return nil, err
	}
	if m.putBytes, err = register(reg, m.putBytes); err != nil {
		return nil, err
	}
	if m.putsRefused, err = register(reg, m.putsRefused); err != nil {
		return nil, err
	}
	if m.verifyFailures, err = register(reg, m.verifyFailures); err != nil {
		return nil, err
	}
	if m.deletes, err = register(reg, m.deletes); err != nil {
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
		return c, fmt.Errorf("chunk: register metrics: %w", err)
	}
	return c, nil
}
