package transport

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Fenced server ids. A quorum-loss recovery of the meta group
// (cluster/metarecover.go) removes servers for good: their nodes may come
// back with their old data and their old configuration, in which they
// still count as voters. Every node refuses every Raft RPC that claims a
// fenced server id, in every group, before the voter check (which knows
// nodes, not server ids: a node wiped and rejoined under a new incarnation
// passes it, while its old incarnation, started from an old copy of its
// data, must not).

// ErrFenced is returned (wrapped, as the remote error text) for an RPC from
// a fenced server id; the fenced node's cluster layer learns it from
// gossip, not from this error.
var ErrFenced = errors.New("transport: server fenced by a meta recovery")

// fence holds the node's fence check.
type fence struct {
	fenced atomic.Pointer[func(id raft.ServerID) bool]
}

// SetFence installs isFenced, asked for the server id of every inbound Raft
// RPC (heartbeats included): it must be cheap and must not block. Nil
// fences nobody.
func (n *Node) SetFence(isFenced func(id raft.ServerID) bool) {
	if isFenced == nil {
		n.fence.fenced.Store(nil)
		return
	}
	n.fence.fenced.Store(&isFenced)
}

func (f *fence) check(id []byte) error {
	p := f.fenced.Load()
	if p == nil || !(*p)(raft.ServerID(id)) {
		return nil
	}
	return fmt.Errorf("%w: %q may not take part in any group: wipe its node's data dir and let it rejoin", ErrFenced, id)
}
