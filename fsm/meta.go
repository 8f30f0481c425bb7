package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Node states in the registry. Only the meta leader writes them, from what
// gossip tells it; gossip is advice, the registry is the decision.
const (
	NodeAlive    = "alive"
	NodeSuspect  = "suspect"
	NodeDead     = "dead"
	NodeDraining = "draining"
	NodeLeft     = "left"
)

// Node roles.
const (
	RoleCore     = "core"
	RoleResource = "resource"
)

// Meta sentinel errors, returned in MetaResult.Err.
var (
	ErrChannelExists   = errors.New("fsm: channel already exists")
	ErrChannelNotFound = errors.New("fsm: channel not found")
	ErrNodeNotFound    = errors.New("fsm: node not found")
	// ErrPlacementChanged: the channel changed after the proposer read it
	// (SetPlacement.Expect); nothing was applied.
	ErrPlacementChanged = errors.New("fsm: channel placement changed meanwhile")
	// ErrInvalidPlacement: a placement that is empty, names a node twice
	// or names a node the registry does not hold; nothing was applied.
	ErrInvalidPlacement = errors.New("fsm: invalid placement")
)

// NodeRecord is one node of the registry.
type NodeRecord struct {
	ID          string `json:"id"`
	ServerID    string `json:"server_id"` // Raft server id: node id + incarnation, never reused
	Role        string `json:"role"`
	Zone        string `json:"zone,omitempty"`
	ClusterAddr string `json:"cluster_addr"`
	HTTPAddr    string `json:"http_addr"`
	GossipAddr  string `json:"gossip_addr"`
	DiskBytes   uint64 `json:"disk_bytes,omitempty"`
	MaxReplicas int    `json:"max_replicas,omitempty"`
	Stake       uint64 `json:"stake,omitempty"`
	State       string `json:"state"`
	// The fields below are written only once the cluster version is 4
	// (cluster: a record of a lower cluster version would be applied by
	// an older binary without them, and the replicas' states would
	// differ). Reported says the record carries them.
	Reported bool `json:"reported,omitempty"`
	// Operator is who runs the node (-operator): placement spreads a
	// channel's replicas over operators as it does over zones.
	Operator string `json:"operator,omitempty"`
	// ServeData: a core node hosts channel replicas only when started
	// with -serve-data; resource nodes always do.
	ServeData bool `json:"serve_data,omitempty"`
	// DiskFree is the free space of the node's data dir's file system,
	// DataBytes what its data dir holds, both as last reported (refreshed
	// in the registry only on a change beyond a threshold: docs/operations.md).
	DiskFree  uint64 `json:"disk_free,omitempty"`
	DataBytes uint64 `json:"data_bytes,omitempty"`
	// Version is the highest command version the node supports (fsm.Version
	// of its binary); 0: it reported none, it is version 1.
	Version     int    `json:"version,omitempty"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// SupportedVersion is the highest command version the node supports.
func (n *NodeRecord) SupportedVersion() int { return max(n.Version, 1) }

// HostsData reports whether the node may host channel replicas: resource
// nodes always, core nodes started with -serve-data. A record written
// before the cluster ran version 4 does not say: its core node hosts data,
// as every core node did before -serve-data.
func (n *NodeRecord) HostsData() bool {
	return n.Role == RoleResource || n.ServeData || !n.Reported
}

// Replica is one placed replica of a channel.
type Replica struct {
	NodeID   string `json:"node_id"`
	ServerID string `json:"server_id"`
	// Added is the meta index of the SetPlacement that added this replica
	// to a running channel; 0 for the placement the channel was created
	// with. Only a replica with Added 0 may bootstrap the group: one added
	// later that bootstrapped would write a configuration of its own at
	// term 1 and split the group.
	Added uint64 `json:"added,omitempty"`
}

// ChannelRecord is one channel: its Raft group and where it is placed.
type ChannelRecord struct {
	Name       string   `json:"name"`
	GroupID    uint64   `json:"group_id"`
	Replicas   int      `json:"replicas"`
	Dedicated  bool     `json:"dedicated,omitempty"`
	Zones      []string `json:"zones,omitempty"`
	Nodes      []string `json:"nodes,omitempty"` // operator pins
	QuotaBytes uint64   `json:"quota_bytes,omitempty"`
	// ChunkSize is the chunk size of the channel's new files (0: the
	// default, DefaultChunkSize; version 5, chunksize.go).
	ChunkSize uint64    `json:"chunk_size,omitempty"`
	Placement []Replica `json:"placement"`
	// Created is the placement the channel was created with, kept by the
	// first SetPlacement that changes it (nil until then: Placement is
	// still the creation placement). It is the one configuration every
	// creation replica bootstraps with: a creation replica that starts
	// late, after the placement changed, must write the same first entry
	// as the others did (cluster/DESIGN.md "Membership changes").
	Created []Replica `json:"created,omitempty"`
	// Settings are the channel's public prefixes and CORS (tokens.go).
	Settings    *ChannelSettings `json:"settings,omitempty"`
	CreateIndex uint64           `json:"create_index"`
	ModifyIndex uint64           `json:"modify_index"`
	// Restore is set on a channel created from a backup
	// (CreateRestoredChannel): its group is seeded from the backup's
	// snapshot instead of bootstrapped (restore.go).
	Restore *RestoreSource `json:"restore,omitempty"`
	// RetiredGroups are the groups the channel had before a quorum-loss
	// recovery (RecoverChannel): their replicas are removed wherever they
	// come back, and never take part in the channel again.
	RetiredGroups []uint64 `json:"retired_groups,omitempty"`
}

// CreationPlacement is the placement the channel was created with.
func (c *ChannelRecord) CreationPlacement() []Replica {
	if c.Created != nil {
		return c.Created
	}
	return c.Placement
}

// HasNode reports whether the channel is placed on node id.
func (c *ChannelRecord) HasNode(id string) bool {
	for _, r := range c.Placement {
		if r.NodeID == id {
			return true
		}
	}
	return false
}

// MetaResult is what the meta FSM's Apply returns.
type MetaResult struct {
	Index   uint64
	Err     error
	GroupID uint64 // CreateChannel: the group id assigned
}

type metaState struct {
	Version   int    `json:"version"`
	Applied   uint64 `json:"applied"` // the index the snapshot reflects
	ClusterID string `json:"cluster_id"`
	// ClusterVersion is the committed cluster version; 0 is version 1.
	ClusterVersion int                       `json:"cluster_version,omitempty"`
	NextGroupID    uint64                    `json:"next_group_id"`
	Nodes          map[string]*NodeRecord    `json:"nodes"`
	Channels       map[string]*ChannelRecord `json:"channels"`
	// Tokens are the channels' tokens by id (tokens.go).
	Tokens map[string]*TokenRecord `json:"tokens,omitempty"`
	// Fenced are the server ids a meta recovery removed (fence.go).
	Fenced []string `json:"fenced,omitempty"`
}

const metaSnapshotVersion = 1

// Meta is the control plane's state machine: the node registry and the
// channels with their placements. It lives in memory; hashicorp/raft's
// snapshots and the meta log (raft-boltdb) make it durable. It is small: it
// holds control-plane decisions only, never channel data.
type Meta struct {
	mu      sync.RWMutex
	st      metaState
	applied uint64
	changed chan struct{}
	version atomic.Int64                        // the cluster version, read without the lock
	fenced  atomic.Pointer[map[string]struct{}] // the fenced server ids (fence.go)

	applyHook atomic.Pointer[func(index uint64)] // a test hook (SetApplyHook)

	// hashes are the latest hashes of the state (metahash.go), under mu;
	// onHash is told of each.
	hashes []metaHash
	onHash func(index, hash uint64)
}

// SetApplyHook installs a test hook that Apply calls first, on raft's FSM
// goroutine, with the entry's index; nil removes it. A hook that sleeps
// makes this node's copy of the meta state trail the meta group's commit
// index, as a slow or busy node's would. Not for production use.
func (m *Meta) SetApplyHook(h func(index uint64)) {
	if h == nil {
		m.applyHook.Store(nil)
		return
	}
	m.applyHook.Store(&h)
}

// NewMeta returns an empty meta FSM.
func NewMeta() *Meta {
	return &Meta{st: emptyMetaState(), changed: make(chan struct{})}
}

func emptyMetaState() metaState {
	return metaState{
		Version:     metaSnapshotVersion,
		NextGroupID: 1,
		Nodes:       map[string]*NodeRecord{},
		Channels:    map[string]*ChannelRecord{},
		Tokens:      map[string]*TokenRecord{},
	}
}

// Apply applies one committed meta log entry.
func (m *Meta) Apply(l *raft.Log) interface{} {
	if h := m.applyHook.Load(); h != nil {
		(*h)(l.Index)
	}
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeMeta(l.Data)
	if err != nil {
		if errors.Is(err, errSkippable) {
			m.mu.Lock()
			m.applied = l.Index
			m.mu.Unlock()
			return &MetaResult{Index: l.Index}
		}
		panic(fmt.Sprintf("fsm: meta: committed entry %d (type %#x) cannot be decoded: %v; "+
			"this binary supports command version %d and the entry was written by a newer one: refusing to skip it, "+
			"which would diverge this node's copy; start this node with the binary the others run "+
			"(docs/operations.md \"Upgrades\")", l.Index, l.Data[:min(len(l.Data), 1)], err, Version))
	}
	m.mu.Lock()
	res := m.apply(l.Index, cmd)
	m.applied = l.Index
	var hashed *metaHash
	if _, ok := cmd.(*MetaHashCheck); ok {
		hashed = m.hashNow(l.Index)
	}
	close(m.changed)
	m.changed = make(chan struct{})
	onHash := m.onHash
	m.mu.Unlock()
	if hashed != nil && onHash != nil {
		onHash(hashed.index, hashed.hash)
	}
	return res
}

func (m *Meta) apply(index uint64, cmd MetaCommand) *MetaResult {
	res := &MetaResult{Index: index}
	switch c := cmd.(type) {
	case *SetClusterID:
		if m.st.ClusterID == "" {
			m.st.ClusterID = c.ID
		}
	case *UpsertNode:
		n := c.Node
		if old, ok := m.st.Nodes[n.ID]; ok {
			n.CreateIndex = old.CreateIndex
			if n.State == "" {
				n.State = old.State
			}
		} else {
			n.CreateIndex = index
			if n.State == "" {
				n.State = NodeAlive
			}
		}
		n.ModifyIndex = index
		m.st.Nodes[n.ID] = &n
	case *SetNodeState:
		n, ok := m.st.Nodes[c.ID]
		if !ok {
			res.Err = ErrNodeNotFound
			return res
		}
		n.State = c.State
		n.ModifyIndex = index
	case *RemoveNode:
		if _, ok := m.st.Nodes[c.ID]; !ok {
			res.Err = ErrNodeNotFound
			return res
		}
		delete(m.st.Nodes, c.ID)
	case *CreateChannel:
		m.applyCreateChannel(index, c.Channel, res)
	case *CreateRestoredChannel:
		if c.Channel.Restore == nil {
			// Refused on the proposing node (cluster); a record without
			// its source would be bootstrapped empty instead.
			res.Err = ErrInvalidRestore
			return res
		}
		m.applyCreateChannel(index, c.Channel, res)
	case *RecoverChannel:
		m.applyRecoverChannel(index, c, res)
	case *FenceServers:
		m.applyFenceServers(c)
	case *SetClusterVersion:
		// Every record it names is written, changed or not: a replica
		// whose record lacked the version (an older binary dropped it)
		// must end up with the same modify index as the others.
		for id, v := range c.Nodes {
			if n, ok := m.st.Nodes[id]; ok {
				n.Version = v
				n.ModifyIndex = index
			}
		}
		if c.Version > m.st.ClusterVersion {
			m.st.ClusterVersion = c.Version
			m.version.Store(int64(c.Version))
		}
	case *DeleteChannel:
		if _, ok := m.st.Channels[c.Name]; !ok {
			res.Err = ErrChannelNotFound
			return res
		}
		delete(m.st.Channels, c.Name)
		m.dropTokens(c.Name)
	case *IssueToken:
		m.applyIssueToken(index, c, res)
	case *RevokeToken:
		t, ok := m.st.Tokens[c.ID]
		if !ok || t.Channel != c.Channel {
			res.Err = ErrTokenNotFound
			return res
		}
		if !t.Revoked {
			t.Revoked = true
			t.ModifyIndex = index
		}
	case *SetChannelSettings:
		ch, ok := m.st.Channels[c.Channel]
		if !ok {
			res.Err = ErrChannelNotFound
			return res
		}
		ch.Settings = cloneSettings(&c.Settings)
		ch.ModifyIndex = index
	case *SetPlacement:
		m.applySetPlacement(index, c, res)
	case *SetChannelQuota:
		ch, ok := m.st.Channels[c.Channel]
		if !ok {
			res.Err = ErrChannelNotFound
			return res
		}
		ch.QuotaBytes = c.QuotaBytes
		ch.ModifyIndex = index
	case *SetChannelChunkSize:
		m.applySetChannelChunkSize(index, c, res)
	}
	return res
}

func (m *Meta) applySetPlacement(index uint64, c *SetPlacement, res *MetaResult) {
	ch, ok := m.st.Channels[c.Channel]
	if !ok {
		res.Err = ErrChannelNotFound
		return
	}
	if ch.ModifyIndex != c.Expect {
		res.Err = ErrPlacementChanged
		return
	}
	if len(c.Placement) == 0 {
		res.Err = ErrInvalidPlacement
		return
	}
	old := map[string]Replica{}
	for _, r := range ch.Placement {
		old[r.ServerID] = r
	}
	seen := map[string]bool{}
	next := make([]Replica, 0, len(c.Placement))
	for _, r := range c.Placement {
		nd, ok := m.st.Nodes[r.NodeID]
		if !ok || seen[r.NodeID] || r.ServerID == "" || nd.ServerID != r.ServerID && old[r.ServerID].ServerID == "" {
			res.Err = ErrInvalidPlacement
			return
		}
		seen[r.NodeID] = true
		if was, ok := old[r.ServerID]; ok {
			next = append(next, was) // keeps its Added
			continue
		}
		next = append(next, Replica{NodeID: r.NodeID, ServerID: r.ServerID, Added: index})
	}
	if ch.Created == nil {
		ch.Created = ch.Placement
	}
	ch.Placement = next
	ch.Replicas = len(next)
	ch.ModifyIndex = index
}

// Applied is the index of the last entry applied.
func (m *Meta) Applied() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.applied
}

// Changed returns a channel closed at the next apply or restore.
func (m *Meta) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

// ClusterVersion is the committed cluster version (version.go): commands
// of a higher version are not proposed.
func (m *Meta) ClusterVersion() int {
	return max(int(m.version.Load()), 1)
}

// ClusterID is the id the first meta leader committed ("" before that).
func (m *Meta) ClusterID() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.ClusterID
}

// Nodes returns copies of every node record, sorted by id.
func (m *Meta) Nodes() []NodeRecord {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]NodeRecord, 0, len(m.st.Nodes))
	for _, n := range m.st.Nodes {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Node returns a copy of one node record.
func (m *Meta) Node(id string) (NodeRecord, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, ok := m.st.Nodes[id]
	if !ok {
		return NodeRecord{}, false
	}
	return *n, true
}

// Channels returns copies of every channel record, sorted by name.
func (m *Meta) Channels() []ChannelRecord {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]ChannelRecord, 0, len(m.st.Channels))
	for _, c := range m.st.Channels {
		out = append(out, cloneChannel(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Channel returns a copy of one channel record.
func (m *Meta) Channel(name string) (ChannelRecord, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.st.Channels[name]
	if !ok {
		return ChannelRecord{}, false
	}
	return cloneChannel(c), true
}

func cloneChannel(c *ChannelRecord) ChannelRecord {
	cp := *c
	cp.Placement = slices.Clone(c.Placement)
	cp.Created = slices.Clone(c.Created)
	cp.Zones = slices.Clone(c.Zones)
	cp.Nodes = slices.Clone(c.Nodes)
	cp.Settings = cloneSettings(c.Settings)
	cp.RetiredGroups = slices.Clone(c.RetiredGroups)
	return cp
}

// Snapshot captures the state; it is small, so a deep copy is enough.
func (m *Meta) Snapshot() (raft.FSMSnapshot, error) {
	b, _, err := m.State() // encoding/json sorts map keys: deterministic bytes
	if err != nil {
		return nil, err
	}
	return metaSnapshot(b), nil
}

// State is the state as a snapshot holds it (Snapshot's bytes, which
// Restore reads) and the index it reflects: what a core node sends a
// resource node that follows the meta state by watch, and what that node
// keeps on disk (cluster/metafollow.go).
func (m *Meta) State() ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.Applied = m.applied
	b, err := json.Marshal(&m.st)
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: meta state: %w", err)
	}
	return b, m.applied, nil
}

// Restore replaces the state with a snapshot's.
func (m *Meta) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st := emptyMetaState()
	dec := json.NewDecoder(rc)
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("fsm: meta restore: %w", err)
	}
	if st.Version != metaSnapshotVersion {
		return fmt.Errorf("fsm: meta restore: unknown snapshot version %d", st.Version)
	}
	if st.Nodes == nil {
		st.Nodes = map[string]*NodeRecord{}
	}
	if st.Channels == nil {
		st.Channels = map[string]*ChannelRecord{}
	}
	if st.Tokens == nil {
		st.Tokens = map[string]*TokenRecord{}
	}
	m.mu.Lock()
	m.st = st
	m.applied = st.Applied
	m.version.Store(int64(st.ClusterVersion))
	m.publishFenced()
	m.hashes = nil // of a state this replica no longer has
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	return nil
}

type metaSnapshot []byte

func (s metaSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: meta persist: %w", err)
	}
	return sink.Close()
}

func (s metaSnapshot) Release() {}

// ValidChannelName reports whether name is [a-z0-9-]{1,63}.
func ValidChannelName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	return strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}
