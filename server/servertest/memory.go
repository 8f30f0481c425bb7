package servertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Memory is a single-node, in-memory backend. Commands arrive encoded (as
// the server sends them to a real node) and are decoded with fsm.Decode.
// Each channel counts its own indexes like a Raft log: every proposal takes
// the next index, even one whose CAS fails.
type Memory struct {
	NodeID string
	// LagValue is what Lag reports (stale reads' X-Shardnet-Lag).
	LagValue time.Duration
	// ElectAfterReads: a new channel has no leader in its create answer
	// and in its first ElectAfterReads Channel reads (a real cluster's
	// first election takes a moment).
	ElectAfterReads int
	// HTTPAddr is the address Nodes reports for the one node (default
	// 127.0.0.1:0).
	HTTPAddr string
	// Peers are listed by Nodes after the one node (a CLI test's other
	// members, unreachable or served elsewhere).
	Peers []api.Node
	// GossipKeys is the node's gossip keyring, base64, the primary first;
	// nil: gossip not encrypted. Guarded by mu once the backend serves.
	GossipKeys []string

	mu        sync.Mutex
	channels  map[string]*memChannel
	nextGroup uint64
	changed   chan struct{} // closed and replaced on every write

	tokens     map[string]*fsm.TokenRecord // by id (tokens.go)
	tokenOrder []string

	draining map[string]bool // the nodes DrainNode marked (nodes.go)
}

type memChannel struct {
	info       api.Channel
	leaderless int // Channel reads left that show no leader yet
	applied    uint64
	kv         map[string]fsm.Entry
	deleted    map[string]uint64 // key -> index of its delete (for WaitKey)
	settings   *fsm.ChannelSettings
	idem       map[string]memIdem // scope NUL idempotency key -> first outcome
}

type memIdem struct {
	hash [fsm.IdemHashBytes]byte
	res  fsm.Result
}

// NewMemory returns a backend holding the given (empty) channels.
func NewMemory(channels ...string) *Memory {
	m := &Memory{NodeID: "node-1", channels: map[string]*memChannel{}, changed: make(chan struct{})}
	for _, ch := range channels {
		if _, err := m.CreateChannel(context.Background(), api.CreateChannelRequest{Name: ch, Replicas: 1}); err != nil {
			panic(err)
		}
	}
	return m
}

// Status describes the one node.
func (m *Memory) Status(context.Context) (api.Status, error) {
	return api.Status{NodeID: m.NodeID, Role: "core", MetaLeader: m.NodeID, Version: "test",
		ClusterVersion: fsm.Version, SupportedVersion: fsm.Version}, nil
}

// Ready always says yes.
func (m *Memory) Ready(context.Context) error { return nil }

// Nodes lists the one node.
func (m *Memory) Nodes(context.Context) ([]api.Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]api.Node{{
		ID: m.NodeID, Role: "core", State: "alive", ClusterAddr: "127.0.0.1:0", HTTPAddr: cmpOr(m.HTTPAddr, "127.0.0.1:0"),
		Usage: api.NodeUsage{Replicas: len(m.channels)}, SupportedVersion: fsm.Version,
	}}, m.Peers...), nil
}

// CreateChannel creates an empty channel placed on the one node.
func (m *Memory) CreateChannel(_ context.Context, req api.CreateChannelRequest) (api.Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.channels[req.Name]; ok {
		return api.Channel{}, fmt.Errorf("%w: %q", cluster.ErrChannelExists, req.Name)
	}
	if req.Replicas > 1 {
		return api.Channel{}, fmt.Errorf("%w: %d replicas asked, 1 eligible node", cluster.ErrNotEnoughNodes, req.Replicas)
	}
	m.nextGroup++
	ch := &memChannel{
		info: api.Channel{
			Name: req.Name, GroupID: m.nextGroup, Replicas: 1, Leader: m.NodeID, Voters: []string{m.NodeID},
			Placement: []api.Replica{{NodeID: m.NodeID, ServerID: m.NodeID + "-1", Voter: true, State: "leader", Healthy: true}},
			Health:    "healthy", CreateIndex: m.nextGroup,
		},
		kv: map[string]fsm.Entry{}, deleted: map[string]uint64{}, idem: map[string]memIdem{},
		leaderless: m.ElectAfterReads,
	}
	m.channels[req.Name] = ch
	out := m.describe(ch)
	out.Token = m.issue(ch, fsm.ScopeReadWrite, time.Time{}).Token
	return out, nil
}

func (m *Memory) describe(ch *memChannel) api.Channel {
	out := ch.info
	out.Placement = slices.Clone(ch.info.Placement)
	out.Placement[0].Applied = ch.applied
	out.Progress = api.ProgressConverged // one replica, always its own group
	if ch.leaderless > 0 {
		out.Leader, out.Voters, out.Health = "", nil, "no_leader"
		out.Placement[0].State, out.Placement[0].Healthy = "candidate", false
	}
	out.Settings = cluster.APISettings(ch.settings)
	out.Usage.Keys = uint64(len(ch.kv))
	for _, e := range ch.kv {
		out.Usage.Bytes += uint64(len(e.Key) + len(e.Value))
	}
	return out
}

// Channels lists the channels by name.
func (m *Memory) Channels(context.Context) ([]api.Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.channels))
	for n := range m.channels {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]api.Channel, 0, len(names))
	for _, n := range names {
		out = append(out, m.describe(m.channels[n]))
	}
	return out, nil
}

// Channel describes one channel.
func (m *Memory) Channel(_ context.Context, name string) (api.Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(name)
	if err != nil {
		return api.Channel{}, err
	}
	out := m.describe(ch)
	if ch.leaderless > 0 {
		ch.leaderless--
	}
	return out, nil
}

// DeleteChannel forgets a channel and its data.
// RepairReplica: no replica of this backend is ever corrupt.
func (m *Memory) RepairReplica(_ context.Context, channel, node string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.channel(channel); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%w: node %s", shard.ErrNotCorrupt, node)
}

// ChangeChannel sets a channel's replica count, quota and chunk size; its one
// replica stays the placement.
func (m *Memory) ChangeChannel(_ context.Context, name string, req api.ChangeChannelRequest) (api.Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(name)
	if err != nil {
		return api.Channel{}, err
	}
	if req.Replicas != nil {
		ch.info.Replicas = *req.Replicas
	}
	if req.QuotaBytes != nil {
		ch.info.QuotaBytes = *req.QuotaBytes
	}
	if req.ChunkSize != nil {
		ch.info.ChunkSize = *req.ChunkSize
	}
	return m.describe(ch), nil
}

func (m *Memory) DeleteChannel(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.channel(name); err != nil {
		return err
	}
	delete(m.channels, name)
	m.dropTokens(name)
	m.broadcast()
	return nil
}

func (m *Memory) channel(name string) (*memChannel, error) {
	ch, ok := m.channels[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", cluster.ErrChannelNotFound, name)
	}
	return ch, nil
}

func (m *Memory) broadcast() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Propose decodes and applies one command at the channel's next index.
func (m *Memory) Propose(ctx context.Context, channel string, cmd []byte) (*fsm.Result, error) {
	c, err := fsm.Decode(cmd)
	if err != nil {
		return nil, fmt.Errorf("servertest: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(channel)
	if err != nil {
		return nil, err
	}
	ch.applied++
	res := &fsm.Result{Index: ch.applied}
	if k, ok := c.(*fsm.Idempotent); ok {
		// As the channel's state machine does (fsm/idem.go), without
		// the window: a test never writes that many entries.
		id := string(k.Scope) + "\x00" + string(k.Key)
		if rec, ok := ch.idem[id]; ok {
			if rec.hash != k.Hash {
				res.Err = fsm.ErrIdempotencyKeyReused
				return res, nil
			}
			replay := rec.res
			return &replay, nil
		}
		defer func() { ch.idem[id] = memIdem{hash: k.Hash, res: *res} }()
		c = k.Cmd
	}
	switch c := c.(type) {
	case *fsm.Put:
		cur := ch.kv[string(c.Key)]
		if c.HasCAS && cur.ModifyIndex != c.CAS {
			res.Err = fsm.ErrCASMismatch
			break
		}
		ch.put(c.Key, c.Value, res.Index)
	case *fsm.Delete:
		cur, ok := ch.kv[string(c.Key)]
		switch {
		case c.HasCAS && cur.ModifyIndex != c.CAS:
			res.Err = fsm.ErrCASMismatch
		case !ok:
			res.Err = fsm.ErrKeyNotFound
		default:
			ch.del(c.Key, res.Index)
		}
	case *fsm.Txn:
		res.Succeeded = true
		for _, cmp := range c.Compares {
			if !ch.holds(cmp) {
				res.Succeeded = false
				break
			}
		}
		ops := c.Success
		if !res.Succeeded {
			ops = c.Failure
		}
		for _, op := range ops {
			r := fsm.OpResult{Type: op.Type, Key: op.Key}
			cur, found := ch.kv[string(op.Key)]
			switch op.Type {
			case fsm.OpPut:
				ch.put(op.Key, op.Value, res.Index)
			case fsm.OpDelete:
				r.Found = found
				if found {
					ch.del(op.Key, res.Index)
				}
			case fsm.OpGet:
				r.Found, r.Entry = found, cur
			}
			res.Ops = append(res.Ops, r)
		}
	default:
		return nil, fmt.Errorf("servertest: unexpected command %T", c)
	}
	m.broadcast()
	return res, nil
}

func (ch *memChannel) put(key, value []byte, index uint64) {
	e, ok := ch.kv[string(key)]
	if !ok {
		e = fsm.Entry{Key: bytes.Clone(key), CreateIndex: index}
	}
	e.Value, e.ModifyIndex = bytes.Clone(value), index
	if e.Value == nil {
		e.Value = []byte{}
	}
	ch.kv[string(key)] = e
	delete(ch.deleted, string(key))
}

func (ch *memChannel) del(key []byte, index uint64) {
	delete(ch.kv, string(key))
	ch.deleted[string(key)] = index
}

func (ch *memChannel) holds(c fsm.Compare) bool {
	e := ch.kv[string(c.Key)] // a missing key: empty value, indexes 0
	var r int
	switch c.Target {
	case fsm.TargetValue:
		r = bytes.Compare(e.Value, c.Value)
	case fsm.TargetModifyIndex:
		r = cmpUint(e.ModifyIndex, c.Index)
	case fsm.TargetCreateIndex:
		r = cmpUint(e.CreateIndex, c.Index)
	}
	switch c.Result {
	case fsm.Equal:
		return r == 0
	case fsm.NotEqual:
		return r != 0
	case fsm.Greater:
		return r > 0
	case fsm.Less:
		return r < 0
	}
	return false
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Get reads one key; every level answers alike.
func (m *Memory) Get(_ context.Context, channel string, key []byte, _ shard.ReadLevel) (fsm.Entry, bool, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(channel)
	if err != nil {
		return fsm.Entry{}, false, 0, err
	}
	e, ok := ch.kv[string(key)]
	return e, ok, ch.applied, nil
}

// List returns keys with prefix after after, in order.
func (m *Memory) List(_ context.Context, channel string, prefix, after []byte, limit int, _ shard.ReadLevel) ([]fsm.Entry, bool, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(channel)
	if err != nil {
		return nil, false, 0, err
	}
	var keys []string
	for k := range ch.kv {
		if strings.HasPrefix(k, string(prefix)) && k > string(after) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]fsm.Entry, 0, len(keys))
	for _, k := range keys {
		out = append(out, ch.kv[k])
	}
	return out, more, ch.applied, nil
}

// WaitKey blocks until key is written or deleted at an index above index.
func (m *Memory) WaitKey(ctx context.Context, channel string, key []byte, index uint64) error {
	for {
		m.mu.Lock()
		ch, err := m.channel(channel)
		if err != nil {
			m.mu.Unlock()
			return err
		}
		e, ok := ch.kv[string(key)]
		if (ok && e.ModifyIndex > index) || ch.deleted[string(key)] > index {
			m.mu.Unlock()
			return nil
		}
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Lag reports LagValue.
func (m *Memory) Lag(string) time.Duration { return m.LagValue }

// DialNode fails: a Memory is alone.
func (m *Memory) DialNode(context.Context, string) (net.Conn, error) {
	return nil, errors.New("servertest: a memory backend has no other nodes")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// GossipKeyring lists GossipKeys.
func (m *Memory) GossipKeyring(context.Context) (api.GossipKeyring, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keyringLocked()
}

func (m *Memory) keyringLocked() (api.GossipKeyring, error) {
	if len(m.GossipKeys) == 0 {
		return api.GossipKeyring{}, cluster.ErrGossipNotEncrypted
	}
	return api.GossipKeyring{Node: m.NodeID, Primary: m.GossipKeys[0], Keys: slices.Clone(m.GossipKeys)}, nil
}

// ChangeGossipKeyring changes GossipKeys as a node changes its keyring.
func (m *Memory) ChangeGossipKeyring(_ context.Context, op api.KeyringOp, key string) (api.GossipKeyring, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.GossipKeys) == 0 {
		return api.GossipKeyring{}, cluster.ErrGossipNotEncrypted
	}
	if _, err := cluster.ParseGossipKey(key); err != nil {
		return api.GossipKeyring{}, err
	}
	i := slices.Index(m.GossipKeys, key)
	switch op {
	case api.KeyringInstall:
		if i < 0 {
			m.GossipKeys = append(m.GossipKeys, key)
		}
	case api.KeyringUse:
		if i < 0 {
			return api.GossipKeyring{}, cluster.ErrGossipKeyNotInstalled
		}
		m.GossipKeys = append([]string{key}, slices.Delete(m.GossipKeys, i, i+1)...)
	case api.KeyringRemove:
		if i == 0 {
			return api.GossipKeyring{}, cluster.ErrGossipKeyPrimary
		}
		if i > 0 {
			m.GossipKeys = slices.Delete(m.GossipKeys, i, i+1)
		}
	default:
		return api.GossipKeyring{}, fmt.Errorf("%w: unknown keyring operation %q", cluster.ErrInvalidRequest, op)
	}
	return m.keyringLocked()
}

// errNoBackups: the memory backend keeps no snapshots to back up or restore.
var errNoBackups = errors.New("servertest: the memory backend does not back up or restore channels")

// Backup is refused by the memory backend once the channel exists.
func (m *Memory) Backup(_ context.Context, channel string) (fsm.BackupHeader, io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.channel(channel); err != nil {
		return fsm.BackupHeader{}, nil, err
	}
	return fsm.BackupHeader{}, nil, errNoBackups
}

// RestoreChannel checks the backup as the cluster does and refuses a sound
// one: the memory backend does not restore.
func (m *Memory) RestoreChannel(_ context.Context, name string, _ int, body io.Reader) (api.Channel, fsm.BackupHeader, error) {
	br, err := fsm.OpenBackup(body)
	if err != nil {
		return api.Channel{}, fsm.BackupHeader{}, err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return api.Channel{}, br.Header, err
	}
	return api.Channel{}, br.Header, errNoBackups
}

// RecoverChannel: a channel of the memory backend never loses a quorum.
func (m *Memory) RecoverChannel(_ context.Context, name, _ string) (api.RecoverResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.channel(name); err != nil {
		return api.RecoverResponse{}, err
	}
	return api.RecoverResponse{}, fmt.Errorf("%w: channel %q has a quorum", cluster.ErrInvalidRequest, name)
}
