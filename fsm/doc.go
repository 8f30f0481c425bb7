// Package fsm owns the deterministic state machines of shardnet (the channel
// state machine, and the meta state machine of the control plane), the
// encoding of every command they apply, and their state in the node's pebble
// state DB. It leaves Raft itself, the log store, transports, snapshot
// storage and the HTTP semantics to the shard, cluster and server packages.
//
// A channel's state lives in one pebble DB per node shared by all its
// channels (Store), each under its group id (Channel). Channel implements
// raft.BatchingFSM: one pebble batch per Raft batch, with the applied index
// written in the same batch, so that a restart resumes where the state is
// instead of replaying the whole log. Business outcomes (CAS mismatch, key
// not found, failed txn compares) are values in *Result; a committed entry
// that cannot be decoded halts the node.
//
// See fsm/DESIGN.md beside this file for why it is built this way.
package fsm
