// Package servertest owns an in-memory stand-in for the node behind the
// HTTP API (a server.Backend with one map per channel), for tests of the
// server, the api client and the CLI.
//
// It leaves Raft, placement and durability out entirely: writes apply at
// once, every read level answers the same, and forwarding is for tests to
// arrange. It does not import package server, so server's own tests can use
// it.
package servertest
