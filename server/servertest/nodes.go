package servertest

import (
	"context"
	"fmt"
	"slices"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
)

// NodeDetail describes a node of Nodes: the one node holds every channel,
// peers hold none. A drain shows in its state.
func (m *Memory) NodeDetail(ctx context.Context, id string) (api.NodeDetail, error) {
	ns, _ := m.Nodes(ctx)
	i := slices.IndexFunc(ns, func(nd api.Node) bool { return nd.ID == id })
	if i < 0 {
		return api.NodeDetail{}, fmt.Errorf("%w: %q", cluster.ErrNodeNotFound, id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := api.NodeDetail{Node: ns[i], MetaVoter: id == m.NodeID}
	if m.draining[id] {
		out.State = fsm.NodeDraining
	}
	if id == m.NodeID {
		for name := range m.channels {
			out.Channels = append(out.Channels, name)
		}
		slices.Sort(out.Channels)
	}
	out.ReplicasLeft = len(out.Channels)
	out.Drained = out.State == fsm.NodeDraining && out.ReplicasLeft == 0
	return out, nil
}

// DrainNode marks a node draining (or not); nothing moves.
func (m *Memory) DrainNode(ctx context.Context, id string, drain bool) error {
	if _, err := m.NodeDetail(ctx, id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining == nil {
		m.draining = map[string]bool{}
	}
	m.draining[id] = drain
	return nil
}

// LeaveNode refuses while the node holds channels, else does nothing.
func (m *Memory) LeaveNode(ctx context.Context, id string) error {
	nd, err := m.NodeDetail(ctx, id)
	if err != nil {
		return err
	}
	if nd.ReplicasLeft > 0 {
		return fmt.Errorf("%w: node %s still holds %d replicas", cluster.ErrNodeState, id, nd.ReplicasLeft)
	}
	return nil
}

// RemoveNode refuses: every node of Nodes is alive.
func (m *Memory) RemoveNode(ctx context.Context, id string) (api.NodeRemoved, error) {
	nd, err := m.NodeDetail(ctx, id)
	if err != nil {
		return api.NodeRemoved{}, err
	}
	return api.NodeRemoved{}, fmt.Errorf("%w: node %s is %s: only a dead or left node can be removed", cluster.ErrNodeState, id, nd.State)
}
