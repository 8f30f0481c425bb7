// Package e2e holds the end-to-end tests of shardnet: real nodes started
// in-process by internal/testcluster, talking real TCP on loopback with real
// data dirs, driven through the HTTP API with the api client.
//
// It owns no production code; the behaviour under test lives in cluster,
// shard, fsm and server.
package e2e
