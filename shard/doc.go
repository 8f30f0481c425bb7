// Package shard owns one node's channel replicas: many hashicorp/raft groups
// sharing one node-level transport (transport), one pebble database for
// all their Raft logs (shard/logstore) and one pebble database for all their
// state machines (fsm), with the lifecycle, proposal and read-barrier logic
// that keeps each replica correct.
//
// It leaves placement (which replicas a node should host) to the cluster
// package and the HTTP surface to the server package; see shard/DESIGN.md beside
// this file for why the pieces are shaped the way they are.
package shard
