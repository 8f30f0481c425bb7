package server

import (
	"errors"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the HTTP layer. Labels are route templates, never paths, and
// no channel label: a node hosts a thousand channels.
type metrics struct {
	requests  *prometheus.CounterVec   // method, route, code
	seconds   *prometheus.HistogramVec // route
	forwarded *prometheus.CounterVec   // result
	watchers  prometheus.Gauge
	conns     prometheus.Gauge
	refused   *prometheus.CounterVec // reason
	evicted   *prometheus.CounterVec // state
	timeouts  *prometheus.CounterVec // direction
}

func newMetrics(reg prometheus.Registerer, log hclog.Logger) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, route template and status code.",
		}, []string{"method", "route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "request_seconds",
			Help:    "Time to answer an HTTP request, by route template (blocking reads included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "forwarded_total",
			Help: "Requests forwarded to another node, by result (ok, unreachable, error, refused: already forwarded once).",
		}, []string{"result"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "watchers",
			Help: "Blocking reads waiting on this node.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "connections",
			Help: "Open connections on the public HTTP listener.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "connections_refused_total",
			Help: "Connections refused by the connection limits, by reason (per_client: one address's cap; total: every connection busy).",
		}, []string{"reason"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "connections_evicted_total",
			Help: "Connections closed to make room at the total cap, by state (idle: keep-alive; new: no request head after a second).",
		}, []string{"state"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardnet", Subsystem: "http", Name: "body_timeouts_total",
			Help: "Requests answered 408 because their body did not arrive in time.",
		}, []string{"listener"}),
	}
	m.conns = register(reg, log, m.conns)
	m.refused = register(reg, log, m.refused)
	m.evicted = register(reg, log, m.evicted)
	m.timeouts = register(reg, log, m.timeouts)
	m.requests = register(reg, log, m.requests)
	m.seconds = register(reg, log, m.seconds)
	m.forwarded = register(reg, log, m.forwarded)
	m.watchers = register(reg, log, m.watchers)
	return m
}

// register registers c, or returns the collector already registered under
// its name (a second Server on the same registry shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, log hclog.Logger, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		log.Error("cannot register metric; it will not be exported", "error", err)
	}
	return c
}

// methodLabel keeps the method label bounded.
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS":
		return m
	}
	return "other"
}
