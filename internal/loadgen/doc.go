// Package loadgen owns `shardnet bench`'s engine: it drives a cluster's HTTP
// API with a fixed number of connections and request loops, counts every
// answer by status and records each successful request's latency in a
// histogram, in the manner of etcd's `benchmark` and `rqlite bench`.
//
// It leaves flags and printing to cmd/shardnet (bench.go) and the meaning of
// the requests to the API (docs/api.md). It is meant to be cheap, since it
// shares the machine with the nodes it measures: one http.Transport, bodies
// allocated once, no goroutine per request, a lock-free histogram per request
// loop, and its own CPU per request measured (getrusage) and reported.
package loadgen
