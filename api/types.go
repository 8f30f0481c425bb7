package api

import "time"

// Header names of the API.
const (
	// HeaderIndex carries a Raft index on channel data responses: the
	// modify index of the key read, the index of the entry written, or the
	// replica's applied index for listings and missing keys.
	HeaderIndex = "X-Shardnet-Index"
	// HeaderCreateIndex carries the create index of the key read.
	HeaderCreateIndex = "X-Shardnet-Create-Index"
	// HeaderLag carries, on stale reads, the milliseconds since the replica
	// that answered last heard from its leader.
	HeaderLag = "X-Shardnet-Lag"
	// HeaderForwarded marks a request one node forwarded to another (its
	// value is the forwarding node's id). A node never forwards such a
	// request again, so forwarding cannot loop.
	HeaderForwarded = "X-Shardnet-Forwarded"
	// HeaderIdempotencyKey names a write for its retries: a retry with
	// the same key answers the first attempt's outcome instead of applying
	// again (docs/api.md "Idempotency keys").
	HeaderIdempotencyKey = "Idempotency-Key"
)

// DefaultAddr is the HTTP address the CLI uses when neither -addr nor
// SHARDNET_ADDR says otherwise.
const DefaultAddr = "http://127.0.0.1:8500"

// Consistency is the read level of a KV read (docs/design.md "D7").
type Consistency string

const (
	// Linearizable reads see every write acknowledged before they started.
	// It is the default and never writes the Raft log.
	Linearizable Consistency = "linearizable"
	// Lease reads are linearizable reads served by the leader without a
	// heartbeat round while its lease holds.
	Lease Consistency = "lease"
	// Stale reads are served by any replica from what it has applied; the
	// answer carries X-Shardnet-Lag.
	Stale Consistency = "stale"
)

// Status describes the node that answered GET /v1/status.
type Status struct {
	NodeID         string `json:"node_id"`
	Role           string `json:"role"` // "core" or "resource"
	Zone           string `json:"zone,omitempty"`
	ClusterAddr    string `json:"cluster_addr"`
	HTTPAddr       string `json:"http_addr"`
	GossipAddr     string `json:"gossip_addr,omitempty"`
	ClusterID      string `json:"cluster_id,omitempty"`
	MetaLeader     string `json:"meta_leader"`      // node id; "" while there is none
	MetaLeaderHTTP string `json:"meta_leader_http"` // its HTTP address
	Replicas       int    `json:"replicas"`         // channel replicas hosted here
	Version        string `json:"version"`
	// ClusterVersion is the command version the cluster runs, as this
	// node's copy of the meta state has it: the highest every member
	// supports (docs/operations.md "Upgrades").
	ClusterVersion int `json:"cluster_version"`
	// SupportedVersion is the highest command version this node's binary
	// supports.
	SupportedVersion int `json:"supported_version"`
	// Fenced says why this node takes no part in the cluster: a meta
	// recovery removed it (docs/operations.md "Recovering the meta
	// group"); "" normally.
	Fenced string `json:"fenced,omitempty"`
	// Chunks and ChunkBytes are what this node's chunk store holds: the
	// files of its channels after deduplication (docs/api.md "Files").
	Chunks     int64 `json:"chunks"`
	ChunkBytes int64 `json:"chunk_bytes"`
}

// Node is one member of the cluster as the meta group records it.
type Node struct {
	ID       string `json:"id"`
	Role     string `json:"role"`     // "core" or "resource"
	Zone     string `json:"zone"`     // "" when none was configured
	Operator string `json:"operator"` // who runs the node; "" when none was configured
	State    string `json:"state"`    // alive, suspect, dead, draining, left
	// ServeData: the node hosts channel replicas (resource nodes, and core
	// nodes started with -serve-data).
	ServeData   bool      `json:"serve_data"`
	ClusterAddr string    `json:"cluster_addr"`
	HTTPAddr    string    `json:"http_addr"`
	GossipAddr  string    `json:"gossip_addr"`
	Capacity    Capacity  `json:"capacity"`
	Usage       NodeUsage `json:"usage"`
	Stake       uint64    `json:"stake"`
	Score       float64   `json:"score"`
	// SupportedVersion is the highest command version the node's binary
	// supports (1: it reported none).
	SupportedVersion int `json:"supported_version"`
}

// Capacity is what a node offers to channels.
type Capacity struct {
	DiskBytes     uint64 `json:"disk_bytes"`      // offered: -disk-bytes, else the data dir's file system size
	DiskFreeBytes uint64 `json:"disk_free_bytes"` // free in the data dir's file system, at most offered minus used
	MaxReplicas   int    `json:"max_replicas"`
}

// NodeUsage is what a node holds.
type NodeUsage struct {
	Replicas  int    `json:"replicas"`   // placed on the node (the placements)
	DiskBytes uint64 `json:"disk_bytes"` // what the node's data dir holds, as reported
}

// CreateChannelRequest is the body of POST /v1/channels.
type CreateChannelRequest struct {
	Name       string   `json:"name"`                  // [a-z0-9-]{1,63}
	Replicas   int      `json:"replicas,omitempty"`    // 1..7; 0: 3, or one per pinned node
	Dedicated  bool     `json:"dedicated,omitempty"`   // on nodes no other channel uses
	Zones      []string `json:"zones,omitempty"`       // only nodes of these zones
	Nodes      []string `json:"nodes,omitempty"`       // pin to these node ids
	QuotaBytes uint64   `json:"quota_bytes,omitempty"` // 0: no quota
	// ChunkSize is the chunk size of the channel's files: 65536 (64 KiB)
	// to 67108864 (64 MiB), a multiple of 65536; 0: 4 MiB.
	ChunkSize uint64 `json:"chunk_size,omitempty"`
}

// ChangeChannelRequest is the body of PATCH /v1/channels/{ch}: the fields
// given change, the others stay. Replicas is the new replica count (1..7;
// odd counts recommended: an even one tolerates no more failures than the
// odd one below it); QuotaBytes the new quota (0: none); ChunkSize the
// chunk size of the files uploaded from now on (as in
// CreateChannelRequest; 0: the default; files already stored keep theirs).
type ChangeChannelRequest struct {
	Replicas   *int    `json:"replicas,omitempty"`
	QuotaBytes *uint64 `json:"quota_bytes,omitempty"`
	ChunkSize  *uint64 `json:"chunk_size,omitempty"`
}

// Progress of a channel's group toward its placement (Channel.Progress).
const (
	ProgressConverged  = "converged"  // the group's voters are exactly the placement
	ProgressConverging = "converging" // its leader is adding, promoting or removing replicas
	ProgressUnknown    = "unknown"    // no replica could tell
)

// RepairRequest is the body of POST /v1/channels/{ch}/repair.
type RepairRequest struct {
	Node string `json:"node"` // the node whose replica a hash check marked corrupt
}

// RepairResponse answers a repair: the replica was rebuilt from the
// leader's state at Applied and serves again.
type RepairResponse struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
}

// BackupContentType is the media type of a channel backup file
// (GET /v1/channels/{ch}/snapshot).
const BackupContentType = "application/vnd.shardnet.backup"

// RestoreResponse answers POST /v1/channels/{ch}/restore: the channel
// created, and the backup it was created from (its channel, index, term and
// time). Every key keeps its create and modify index; new writes get
// indexes above Index.
type RestoreResponse struct {
	Channel Channel `json:"channel"`
	From    string  `json:"from"`
	Index   uint64  `json:"index"`
	Term    uint64  `json:"term,omitempty"`
	Created string  `json:"created,omitempty"`
}

// RecoverRequest is the body of POST /v1/channels/{ch}/recover.
type RecoverRequest struct {
	// Confirm must be "i-understand-data-loss".
	Confirm string `json:"confirm"`
}

// RecoverResponse answers a recovery: the channel re-formed (its new group
// and placement) from the replica on Survivor, whose state at Index it
// holds; Lost are the nodes whose replicas did not answer.
type RecoverResponse struct {
	Channel    Channel  `json:"channel"`
	Survivor   string   `json:"survivor"`
	Lost       []string `json:"lost"`
	Index      uint64   `json:"index"`
	OldGroupID uint64   `json:"old_group_id"`
}

// Channel describes a channel: its Raft group, placement and health.
type Channel struct {
	Name       string   `json:"name"`
	GroupID    uint64   `json:"group_id"`
	Replicas   int      `json:"replicas"`
	Dedicated  bool     `json:"dedicated,omitempty"`
	Zones      []string `json:"zones,omitempty"`
	Nodes      []string `json:"nodes,omitempty"`
	QuotaBytes uint64   `json:"quota_bytes,omitempty"`
	// ChunkSize is the chunk size new files are cut into (bytes).
	ChunkSize uint64    `json:"chunk_size,omitempty"`
	Placement []Replica `json:"placement"`
	Leader    string    `json:"leader"` // node id; "" while there is none
	Voters    []string  `json:"voters"` // node ids
	// NonVoters are the replicas being added: they receive the log and
	// are promoted to voters once caught up (node ids).
	NonVoters []string `json:"non_voters,omitempty"`
	// Progress says whether the group's configuration, as its leader (or
	// the replica asked) reports it, matches the placement (Progress*).
	Progress    string       `json:"progress,omitempty"`
	Health      string       `json:"health"`
	Usage       ChannelUsage `json:"usage"`
	CreateIndex uint64       `json:"create_index"`
	// Token is a read-write token of the channel. Only the create
	// response carries it, and only once: the cluster keeps a hash.
	// Absent while the cluster runs a version before channel tokens.
	Token string `json:"token,omitempty"`
	// Settings are the channel's public prefixes and CORS, when set.
	Settings *ChannelSettings `json:"settings,omitempty"`
}

// Token scopes.
const (
	ScopeReadOnly  = "read-only"
	ScopeReadWrite = "read-write"
)

// TokenRequest is the body of POST /v1/channels/{ch}/tokens. Scope is
// ScopeReadOnly (the default) or ScopeReadWrite; TTL (a Go duration, "24h")
// or ExpiresAt (RFC 3339) bounds its life, neither: it never expires.
type TokenRequest struct {
	Scope     string `json:"scope,omitempty"`
	TTL       string `json:"ttl,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// TokenInfo describes one token, without its secret.
type TokenInfo struct {
	ID        string     `json:"id"`
	Scope     string     `json:"scope"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Revoked   bool       `json:"revoked"`
}

// TokenCreated answers a token's creation: Token is the whole token
// ("snc_<id>_<secret>"), shown this once.
type TokenCreated struct {
	TokenInfo
	Token string `json:"token"`
}

// SignRequest is the body of POST /v1/channels/{ch}/sign.
type SignRequest struct {
	Key string `json:"key,omitempty"`
	// File, instead of Key, signs a link to a file's path (GET and HEAD
	// of /v1/channels/{ch}/files/{path}).
	File string `json:"file,omitempty"`
	TTL  string `json:"ttl,omitempty"` // a Go duration; default 1h, at most 7 days
}

// SignResponse is a signed link: URL is the path and query to GET (or
// HEAD) on any node, without an Authorization header, until ExpiresAt.
type SignResponse struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ChannelSettings is the body of PUT /v1/channels/{ch}/settings, and what
// a channel's description shows: keys under PublicPrefixes are readable
// without a token; CORS is answered on the channel's routes.
type ChannelSettings struct {
	PublicPrefixes []string `json:"public_prefixes,omitempty"`
	CORS           *CORS    `json:"cors,omitempty"`
}

// CORS is a channel's cross-origin policy. AllowedOrigins holds exact
// origins ("https://app.example") or "*"; MaxAge is in seconds.
type CORS struct {
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	AllowedMethods []string `json:"allowed_methods,omitempty"`
	AllowedHeaders []string `json:"allowed_headers,omitempty"`
	MaxAge         int      `json:"max_age,omitempty"`
}

// Replica is one placed replica of a channel.
type Replica struct {
	NodeID   string `json:"node_id"`
	ServerID string `json:"server_id"`
	Voter    bool   `json:"voter"`
	Applied  uint64 `json:"applied"` // the replica's applied index, as last reported
	State    string `json:"state"`   // leader, follower, candidate, starting, ...
	Healthy  bool   `json:"healthy"`
	// HashMismatch: a hash check found this replica's state other than
	// the majority of its group's at index HashMismatchIndex. It serves no
	// reads and is not healthy until an operator repairs it
	// (docs/operations.md).
	HashMismatch      bool   `json:"hash_mismatch,omitempty"`
	HashMismatchIndex uint64 `json:"hash_mismatch_index,omitempty"`
}

// ChannelUsage is how much a channel stores. Bytes counts its keys and
// values and its files' sizes (logical bytes, before deduplication), as
// quota_bytes does.
type ChannelUsage struct {
	Keys  uint64 `json:"keys"`
	Bytes uint64 `json:"bytes"`
}

// KV is one key of a listing. Value is base64 in JSON, as encoding/json
// encodes []byte.
type KV struct {
	Key         string `json:"key"`
	Value       []byte `json:"value"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// ListResponse is a page of GET /v1/channels/{ch}/kv/?prefix=. Next is the
// cursor to pass as after= for the next page, "" when this page is the last.
type ListResponse struct {
	Items []KV   `json:"items"`
	Next  string `json:"next"`
	Index uint64 `json:"index"` // the replica's applied index when listed
}

// WriteResponse is the answer to a KV PUT or DELETE.
type WriteResponse struct {
	Index uint64 `json:"index"` // the Raft index of the entry
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status string `json:"status"` // "ok"
}

// KeyringOp is a change of a node's gossip keyring.
type KeyringOp string

// The keyring operations, as Consul's `keyring` command has them: install
// a key (it decrypts at once, encrypts once used), use an installed key (it
// encrypts from then on), remove a key that is not the primary one.
const (
	KeyringInstall KeyringOp = "install"
	KeyringUse     KeyringOp = "use"
	KeyringRemove  KeyringOp = "remove"
)

// KeyringRequest is the body of POST, PUT and DELETE /v1/operator/keyring.
type KeyringRequest struct {
	Key string `json:"key"` // base64 of 16, 24 or 32 bytes
}

// GossipKeyring is one node's gossip keys (GET /v1/operator/keyring).
type GossipKeyring struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary"` // the key gossip is encrypted with
	Keys    []string `json:"keys"`    // every installed key, the primary first; each decrypts
}
