// Package cluster owns the node: the memberlist gossip overlay, the meta Raft
// group (control plane), the allocator that places channels, the reconciler
// that makes this node run the replicas placed on it, the Backend the HTTP
// server calls, and the routing of a request this node cannot answer to the
// node that can (one binary call: route.go).
//
// It leaves running the replicas to package shard, the state machines to
// package fsm and HTTP to package server; see cluster/DESIGN.md beside this file.
package cluster
