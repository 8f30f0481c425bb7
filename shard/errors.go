package shard

import (
	"errors"
	"fmt"
)

// Sentinel errors of the shard layer. The server maps them to HTTP statuses in
// one table; RedirectError carries where to forward.
var (
	ErrNotLeader      = errors.New("shard: not the channel leader")
	ErrNoLeader       = errors.New("shard: channel has no leader")
	ErrNotHosted      = errors.New("shard: channel not hosted on this node")
	ErrOutcomeUnknown = errors.New("shard: outcome unknown")
	ErrOverloaded     = errors.New("shard: too many proposals in flight")
	ErrStopped        = errors.New("shard: replica stopped")
	ErrDiskFull       = errors.New("shard: disk almost full, writes refused")
	// ErrReplicaCorrupt: the replica's state differed from its group's
	// majority at a hash check (hashcheck.go); it serves nothing until
	// repaired.
	ErrReplicaCorrupt = errors.New("shard: this replica's state differs from its group's (hash check); it serves no reads until repaired")
	// ErrNotCorrupt: a repair of a replica that is not marked corrupt.
	ErrNotCorrupt = errors.New("shard: the replica is not marked corrupt")
)

// RedirectError says that another node can serve the request: the leader of
// a group, or a node hosting a channel this node does not. errors.Is sees the
// wrapped sentinel (ErrNotLeader, ErrNotHosted, ...).
type RedirectError struct {
	Err    error  // the sentinel
	NodeID string // the node to forward to
	Addr   string // its cluster address (what the node transport dials)
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("%v (try node %s at %s)", e.Err, e.NodeID, e.Addr)
}

func (e *RedirectError) Unwrap() error { return e.Err }
