package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// A node that starts serves no channel request from its replicas until its
// copy of the meta state is current: it has applied at least the meta
// leader's commit index as learnt by a meta read index after the start
// (metaSync). Once that held, it holds for the life of the process.
//
// Why: replicas start from disk at once (docs/design.md "D9"), and the meta
// state a node restores from its own disk may be old. A node that was lost
// while its channel was recovered (recover.go) comes back with a replica of
// the channel's OLD group and a meta copy that still names that group; two
// such nodes could elect a leader of the old group between them and serve
// stale reads, or take writes nobody will see, until their meta copies catch
// up and their reconcilers remove the old replicas. Every client request
// and every forwarded read index or proposal reaches a replica through
// servedReplica, which waits for the meta copy first; after that, the
// channel maps to its current group, and a replica of a retired group
// answers not hosted. A node fenced by a meta recovery (metafence.go)
// never gets there: it serves nothing.
//
// The price: a node restarted while the meta group has no leader serves
// none of its channels until the meta group is back (503 not_ready, which
// clients retry elsewhere); nodes that kept running are not affected.

// metaCurrentSinceStart returns nil once this node's meta copy caught up
// after the start, else tries once (metaSync, within ctx).
func (n *Node) metaCurrentSinceStart(ctx context.Context) error {
	if n.metaCurrent.Load() {
		return nil
	}
	if f := n.MetaFenced(); f != "" {
		return fmt.Errorf("%w: %s", ErrNotReady, f)
	}
	if n.meta.fsm.ClusterVersion() < fsm.MetaVersion(&fsm.RecoverChannel{}) {
		// No channel can have been recovered (retired a group) below the
		// version that brought recoveries; and nodes of the previous
		// release, which may lead the meta group during an upgrade, take
		// no meta read index call. The check starts once every node runs
		// this release.
		return nil
	}
	if err := n.metaSync(ctx); err != nil {
		return fmt.Errorf("%w (this node started and serves no channel until its copy of the meta state has caught up with the meta group)", err)
	}
	if n.metaCurrent.CompareAndSwap(false, true) {
		n.log.Info("meta copy caught up since the start: serving channels", "after", time.Since(n.created).Round(time.Millisecond))
	}
	return nil
}

// servedReplica checks that rep may serve a request: the meta copy is
// current since the start, and rep's group is its channel's current group.
func (n *Node) servedReplica(ctx context.Context, rep *shard.Replica) error {
	if err := n.metaCurrentSinceStart(ctx); err != nil {
		return err
	}
	if ch, ok := n.meta.fsm.Channel(rep.Channel); ok && ch.GroupID != rep.GroupID {
		return fmt.Errorf("%w: group %d of channel %q is retired (the channel is group %d now)", shard.ErrNotHosted, rep.GroupID, rep.Channel, ch.GroupID)
	}
	return nil
}
