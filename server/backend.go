package server

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Backend is what the server needs from the node (package cluster
// implements it). Every method answers itself, asking the node that can
// when this one cannot (cluster/route.go); the server only turns its
// errors into statuses, matched with errors.Is against the sentinels of
// fsm, shard and cluster (see errorTable). A *cluster.PreviousVersionError
// is the one exception: the node that can answer runs the previous version,
// and the server forwards the request there (forward.go).
//
// The read methods take no reader object on purpose: an interface type
// declared here could not be named by package cluster without importing
// server, so every type in these signatures comes from api, fsm or shard.
type Backend interface {
	// Status describes this node and the meta leader it knows of.
	Status(ctx context.Context) (api.Status, error)
	// Ready returns nil once the node can serve requests (joined, meta leader known), else why not.
	Ready(ctx context.Context) error
	// Nodes lists the members the meta group records.
	Nodes(ctx context.Context) ([]api.Node, error)
	// CreateChannel places a channel (the request is validated and defaulted), on the meta leader.
	CreateChannel(ctx context.Context, req api.CreateChannelRequest) (api.Channel, error)
	// Channels lists every channel from this node's copy of the meta state.
	Channels(ctx context.Context) ([]api.Channel, error)
	// Channel describes one channel, or cluster.ErrChannelNotFound.
	Channel(ctx context.Context, name string) (api.Channel, error)
	// DeleteChannel deletes a channel, on the meta leader as CreateChannel.
	DeleteChannel(ctx context.Context, name string) error
	// ChangeChannel changes a channel's replica count or quota (validated), on the meta leader as CreateChannel, and returns the channel as its new placement has it.
	ChangeChannel(ctx context.Context, name string, req api.ChangeChannelRequest) (api.Channel, error)
	// Propose commits an fsm.Encode'd command on the channel's local leader replica (on the leader's node when another leads) and returns its result once applied; shard.ErrOutcomeUnknown when it may have been applied without an answer.
	Propose(ctx context.Context, channel string, cmd []byte) (*fsm.Result, error)
	// Get reads key from the local replica once level allows (docs/raft-notes.md "R2"), returning the entry, whether it exists and the replica's applied index at the read.
	Get(ctx context.Context, channel string, key []byte, level shard.ReadLevel) (e fsm.Entry, found bool, applied uint64, err error)
	// List returns up to limit entries whose keys start with prefix and sort after after, whether more follow, and the applied index, under the same rules as Get.
	List(ctx context.Context, channel string, prefix, after []byte, limit int, level shard.ReadLevel) (es []fsm.Entry, more bool, applied uint64, err error)
	// WaitKey blocks until an entry with an index above index writes or deletes key in the local replica, or ctx ends (then ctx.Err()).
	WaitKey(ctx context.Context, channel string, key []byte, index uint64) error
	// Lag is the time since the local replica of channel last heard from its leader (0 on the leader), reported by stale reads.
	Lag(channel string) time.Duration
	// RepairReplica rebuilds node's replica of channel, marked corrupt by a hash check, from its leader's state (on that node) and returns the applied index it was rebuilt at.
	RepairReplica(ctx context.Context, channel, node string) (uint64, error)
	// Backup returns a backup's header (Index set) and the channel's snapshot stream as of a linearizable read index taken now; the caller closes the stream (cluster/backup.go).
	Backup(ctx context.Context, channel string) (fsm.BackupHeader, io.ReadCloser, error)
	// RestoreChannel creates channel name from the backup file read from body (replicas 0: the backup's), once the file checked out (else fsm.ErrBadBackup, nothing created), and returns it once it serves.
	RestoreChannel(ctx context.Context, name string, replicas int, body io.Reader) (api.Channel, fsm.BackupHeader, error)
	// RecoverChannel re-forms a channel that lost a majority of its replicas from its best surviving replica; confirm must be "i-understand-data-loss" (cluster/recover.go).
	RecoverChannel(ctx context.Context, name, confirm string) (api.RecoverResponse, error)
	// IssueToken records a new token of channel (meta leader only, as CreateChannel) expiring at expires (zero: never) and returns it with its secret.
	IssueToken(ctx context.Context, channel, scope string, expires time.Time) (api.TokenCreated, error)
	// Tokens lists channel's tokens, without secrets, from this node's copy of the meta state.
	Tokens(ctx context.Context, channel string) ([]api.TokenInfo, error)
	// RevokeToken marks a token of channel revoked (meta leader only), or cluster.ErrTokenNotFound.
	RevokeToken(ctx context.Context, channel, id string) error
	// SetChannelSettings replaces channel's public prefixes and CORS (meta leader only).
	SetChannelSettings(ctx context.Context, channel string, s api.ChannelSettings) error
	// Token returns a token's record from this node's copy of the meta state: no Raft round-trip, checked on every request that carries a channel token.
	Token(id string) (fsm.TokenRecord, bool)
	// ChannelSettings returns channel's settings from this node's copy of the meta state; nil when it has none or is not known here.
	ChannelSettings(channel string) *fsm.ChannelSettings
	// GossipKeyring lists this node's gossip keys, or cluster.ErrGossipNotEncrypted.
	GossipKeyring(ctx context.Context) (api.GossipKeyring, error)
	// ChangeGossipKeyring installs, uses or removes a base64 gossip key on this node only and returns the resulting keyring.
	ChangeGossipKeyring(ctx context.Context, op api.KeyringOp, key string) (api.GossipKeyring, error)
	// NodeDetail describes one node from this node's copy of the meta state (replicas left, drained, what cannot move), or cluster.ErrNodeNotFound.
	NodeDetail(ctx context.Context, id string) (api.NodeDetail, error)
	// DrainNode starts (drain true) or cancels a node's drain, on the meta leader; cluster.ErrNodeState when its state does not allow it.
	DrainNode(ctx context.Context, id string, drain bool) error
	// LeaveNode makes a node that holds no replica leave the cluster, on that node; cluster.ErrNodeState while it holds replicas.
	LeaveNode(ctx context.Context, id string) error
	// RemoveNode forgets a dead or left node for good (replicas placed elsewhere, meta vote, registry), on the meta leader.
	RemoveNode(ctx context.Context, id string) (api.NodeRemoved, error)
	// DialNode opens a stream to the HTTP API of the node at a cluster address, over the cluster connection, to forward a request to a node of the previous version (forward.go); the far end serves it with ServeForwarded.
	DialNode(ctx context.Context, addr string) (net.Conn, error)
}
