package fsm

import (
	"slices"
)

// FenceServers records Raft server ids that a quorum-loss recovery of the
// meta group removed (version 4; cluster/metarecover.go, docs/operations.md
// "Recovering the meta group"). A fenced id never takes part in any group
// again: every node's transport refuses its Raft RPCs, the meta leader never
// adds it back, and the node that runs under it learns from gossip that it
// was fenced. Its node comes back only wiped, under a new incarnation (a new
// server id). Ids already fenced are kept once; the list only grows.
type FenceServers struct {
	IDs []string `json:"ids"`
}

func (*FenceServers) metaType() byte { return metaFenceServers }

func (m *Meta) applyFenceServers(c *FenceServers) {
	for _, id := range c.IDs {
		if id != "" && !slices.Contains(m.st.Fenced, id) {
			m.st.Fenced = append(m.st.Fenced, id)
		}
	}
	slices.Sort(m.st.Fenced)
	m.publishFenced()
}

// publishFenced makes the fenced ids readable without the lock (the
// transport asks on every RPC). Called under mu.
func (m *Meta) publishFenced() {
	set := make(map[string]struct{}, len(m.st.Fenced))
	for _, id := range m.st.Fenced {
		set[id] = struct{}{}
	}
	m.fenced.Store(&set)
}

// IsFenced reports whether server id was fenced by a meta recovery
// (FenceServers). Cheap: read on every inbound Raft RPC.
func (m *Meta) IsFenced(id string) bool {
	p := m.fenced.Load()
	if p == nil {
		return false
	}
	_, ok := (*p)[id]
	return ok
}

// Fenced returns the fenced server ids, sorted.
func (m *Meta) Fenced() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.st.Fenced)
}
