package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
	"github.com/shardnet/shardnet/transport"
)

// Version is the release this binary reports.
var Version = "0.1.0-dev"

// Config is one node's configuration.
type Config struct {
	Name        string // node id, unique in the cluster
	Role        string // fsm.RoleCore or fsm.RoleResource
	Zone        string
	DataDir     string
	BindAddr    string // IP to bind gossip and cluster ports on
	Advertise   string // IP peers use to reach us (default BindAddr)
	GossipPort  int
	ClusterPort int
	HTTPAddr    string // the advertised HTTP address (host:port) of this node's API

	BootstrapExpect int      // core nodes to wait for before bootstrapping the meta group
	Join            []string // gossip addresses of nodes to join

	Stake uint64
	// CapacityDisk is the disk bytes the node offers to channels (0: the
	// size of the data dir's file system).
	CapacityDisk uint64
	MaxReplicas  int
	// Operator is who runs the node: placement spreads a channel's
	// replicas over operators as over zones.
	Operator string
	// ServeData: a core node hosts channel replicas only when set;
	// resource nodes always do.
	ServeData bool
	// DeadAfter is how long the meta leader must see a node absent from
	// gossip before the registry calls it dead (0: 5 minutes): until then
	// it is suspect (registry.go).
	DeadAfter time.Duration
	// StatsEvery is how often the node measures its disk (free bytes of
	// the data dir's file system, bytes of the data dir) for gossip (0:
	// 30 seconds).
	StatsEvery time.Duration

	ClusterKey []byte // shared secret of the cluster port (without TLS)
	// Token is the operator token, the same on every node ("" leaves the
	// API open): the node serving a route call checks the client's token
	// it carries against it (routeauth.go), as the HTTP server does.
	Token string
	// TLS, when set, makes the cluster port speak mutual TLS with these
	// certificates instead of proving ClusterKey (transport.Config.TLS); its
	// certificate must name this node (Name).
	TLS *transport.Certs
	// GossipKey is the AES key (16, 24 or 32 bytes) gossip starts with
	// when the data dir holds no keyring yet (KeyringFile); nil with no
	// keyring: gossip is not encrypted.
	GossipKey []byte

	// LocalGossip selects memberlist's fast loopback timings (dev mode, tests).
	LocalGossip bool
	// tweakGossip, set by this package's tests, changes memberlist's
	// configuration before it starts.
	tweakGossip func(*memberlist.Config)
	// ChannelRaft tunes every channel group; zero values take defaults.
	ChannelRaft shard.RaftTiming
	// MetaRaft tunes the meta group; zero values take defaults.
	MetaRaft shard.RaftTiming

	Logger   hclog.Logger
	Registry *prometheus.Registry

	// MaxInFlight bounds each channel's proposals in flight (0: the shard
	// default); beyond, writes get 429.
	MaxInFlight int
	// KeyIndexBytes bounds the node's in-memory key indexes (see
	// shard.Config.KeyIndexBytes; 0: the default, negative: off).
	KeyIndexBytes int64
	// LeaderRebalance is how often the node hands the channels it leads
	// back to their preferred leaders (shard.Config.LeaderRebalance; 0:
	// the default, negative: off).
	LeaderRebalance time.Duration
	// HashCheckInterval is how often the leader of each channel this node
	// leads proposes a hash check, after which every replica compares its
	// state's hash with its peers' (shard.Config.HashCheckInterval; 0: the
	// default, 5 minutes; negative: off).
	HashCheckInterval time.Duration
	// ChunkGCInterval is the pause between two rounds of the chunk
	// collector, which deletes chunks no manifest references
	// (collector.go; 0: DefaultChunkGCInterval, negative: off).
	ChunkGCInterval time.Duration
	// ChunkGCGrace is how long after its last Put (or, on a replica,
	// its last receipt for an upload still sending) a chunk is never
	// collected (0: DefaultChunkGCGrace).
	ChunkGCGrace time.Duration

	// RepairPerNode and RepairMax bound the replicas the meta leader
	// moves at once (automatic repair, drain: repair.go), onto one node
	// and in the cluster; 0: DefaultRepairPerNode, DefaultRepairMax.
	RepairPerNode int
	RepairMax     int

	// Faults, when set, injects network faults into the node's cluster
	// transport (tests only: partitions, slow links; see transport.Faults).
	Faults *transport.Faults
	// LogFS, when set, is the file system of the node's Raft log store
	// (tests only: slow fsyncs; see logstore.SlowFS).
	LogFS vfs.FS
}

func (c *Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if c.Role != fsm.RoleCore && c.Role != fsm.RoleResource {
		errs = append(errs, fmt.Errorf("role must be %q or %q, not %q", fsm.RoleCore, fsm.RoleResource, c.Role))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.TLS != nil && c.TLS.NodeID() != c.Name {
		errs = append(errs, fmt.Errorf("the TLS certificate names node %q, but this node is %q", c.TLS.NodeID(), c.Name))
	}
	if c.TLS != nil && c.TLS.Role() != c.Role {
		// Other nodes trust what the certificate says (route calls: a
		// node-internal meta write only from a core node), not the flag.
		if c.TLS.Role() == "" {
			errs = append(errs, fmt.Errorf("the TLS certificate names no role: make a new one with `shardnet tls cert create -node %s -role %s`", c.Name, c.Role))
		} else {
			errs = append(errs, fmt.Errorf("the TLS certificate names role %q, but this node's role is %q", c.TLS.Role(), c.Role))
		}
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 5 {
		errs = append(errs, errors.New("bootstrap-expect must be 0..5"))
	}
	if c.BootstrapExpect > 0 && c.Role != fsm.RoleCore {
		errs = append(errs, errors.New("only core nodes bootstrap the meta group"))
	}
	return errors.Join(errs...)
}

func (c *Config) withDefaults() {
	if c.BindAddr == "" {
		c.BindAddr = "127.0.0.1"
	}
	if c.Advertise == "" {
		c.Advertise = c.BindAddr
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.RepairPerNode <= 0 {
		c.RepairPerNode = DefaultRepairPerNode
	}
	if c.RepairMax <= 0 {
		c.RepairMax = DefaultRepairMax
	}
	if c.MaxReplicas == 0 {
		c.MaxReplicas = 2000
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.StatsEvery == 0 {
		c.StatsEvery = 30 * time.Second
	}
	if c.ChunkGCInterval == 0 {
		c.ChunkGCInterval = DefaultChunkGCInterval
	}
	if c.ChunkGCGrace <= 0 {
		c.ChunkGCGrace = DefaultChunkGCGrace
	}
}

// DefaultDeadAfter is Config.DeadAfter's default.
const DefaultDeadAfter = 5 * time.Minute

const (
	maxMetaVoters     = 5
	leaderLoopEvery   = 500 * time.Millisecond
	reconcileEvery    = 2 * time.Second
	membershipEvery   = 250 * time.Millisecond
	leaderCacheTTL    = 2 * time.Second
	internalCallLimit = 3 * time.Second
)
