package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/shardnet/shardnet/chunk"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
	"github.com/shardnet/shardnet/transport"
)

// identity is what a data dir remembers about the node that owns it.
type identity struct {
	Format      int    `json:"format"`
	NodeID      string `json:"node_id"`
	Incarnation string `json:"incarnation"`
}

// heartbeatBatch is how long a Raft heartbeat waits for others going to the
// same peer. Heartbeats go out every HeartbeatTimeout/10 to /5 (500-1000 ms
// by default), so 20 ms more delays nothing that matters and merges the
// heartbeats of a thousand groups into a few frames.
const heartbeatBatch = 20 * time.Millisecond

// Node is one shardnet node: gossip, the meta group, its channel replicas.
type Node struct {
	cfg      Config
	log      hclog.Logger
	serverID raft.ServerID

	trans  *transport.Node
	shards *shard.Manager
	meta   *metaGroup
	// metaFSM is meta.fsm, there before the meta group opens: the shard
	// manager reads the cluster version from it
	// (shard.Config.ClusterVersion).
	metaFSM *fsm.Meta
	// check holds the operator token and checks the clients that route
	// calls carry (routeauth.go).
	check  *access.Checker
	gossip *gossip
	// chunks is the node's chunk store, <data-dir>/chunks, shared by all
	// its channels (files.go).
	chunks *chunk.Store
	// uploads are the resumable uploads opened here (uploads.go).
	uploads uploadTable
	// uploadMem bounds the buffers of the uploads received here (files.go).
	uploadMem uploadMemory
	// leases pin the chunks this replica received for uploads still
	// sending (collector.go).
	leases chunkLeases
	// holds postpone collection while backups run (backupholds.go).
	holds      collectHolds
	collecting sync.Mutex // one collection round at a time
	healing    sync.Mutex // one added replica's anti-entropy pass at a time

	// route serves requests elsewhere and serves other nodes' calls
	// (route.go).
	route       *router
	readBatches sync.Map       // *shard.Replica → *readIndexBatch (readindex.go)
	metaReads   readIndexBatch // meta read indexes (metaread.go)
	metrics     *metrics

	poke     chan struct{}
	lpoke    chan struct{}
	started  atomic.Bool // every field above is set: callbacks may use them
	metaFast atomic.Bool // the meta group's failover timers are in force
	stop     chan struct{}
	hashSem  chan struct{} // comparisons of state hashes running (hashcheck.go)
	seeding  sync.Map      // group id → seeding from a backup (backup.go)
	seedTold sync.Map      // group id → a failed seed was logged at warn
	// nextMetaCheck is when the meta leader proposes its next hash check
	// (leader loop only); metaCorrupt is set once a check found this
	// node's copy of the meta state wrong (metahash.go).
	nextMetaCheck time.Time
	metaCorrupt   atomic.Pointer[shard.Corruption]
	// metaHashWaitTold: the leader loop logged that meta hash checks wait
	// for the cluster version.
	metaHashWaitTold bool
	// registryMu keeps the leader loop's registration of gossip members
	// and the node commands (drain.go) apart: a state an operator set
	// must not be overwritten by an update read before it.
	registryMu sync.Mutex
	// repair: the meta leader's moves in flight (repair.go).
	repair repairs
	// renewedAt is the meta applied index at which renewIncarnations last
	// found nothing to rewrite (leader loop only).
	renewedAt uint64
	// leaving is closed once the node agreed to leave the cluster
	// (drain.go): its process shuts down (Leaving).
	leaving     chan struct{}
	leavingOnce sync.Once
	// reg is the meta leader's memory of absent nodes (registry.go;
	// leader loop only).
	reg registry
	// localFence is the record of a meta recovery run on this node's data
	// dir (metarecover.go), nil if none; metaFenced is set once this node
	// learnt that a meta recovery fenced it (metafence.go);
	// fenceVersionTold: the meta loop logged that the fence waits for the
	// cluster version.
	localFence       *metaFence
	metaFenced       atomic.Pointer[string]
	fenceVersionTold bool
	// metaCurrent is set once this node's copy of the meta state caught
	// up with the meta group after the node started (metacurrent.go).
	metaCurrent atomic.Bool
	// follow is a resource node's meta watch (metafollow.go).
	follow metaFollow
	// created is when New began: the restart's clock (metacurrent.go logs
	// when the node first serves its channels).
	created  time.Time
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// New starts a node: transport, local replicas (without waiting for the
// meta group, docs/design.md "D9"), the meta group and gossip.
func New(cfg Config) (*Node, error) {
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("cluster: config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: create data dir: %w", err)
	}
	id, err := loadIdentity(cfg.DataDir, cfg.Name)
	if err != nil {
		return nil, err
	}
	n := &Node{
		created:  time.Now(),
		cfg:      cfg,
		log:      cfg.Logger,
		serverID: shard.ServerIDFor(cfg.Name, id.Incarnation),
		poke:     make(chan struct{}, 1),
		lpoke:    make(chan struct{}, 1),
		stop:     make(chan struct{}),
		leaving:  make(chan struct{}),
		repair:   repairs{inFlight: map[string]*moveInFlight{}},
		uploads: uploadTable{
			idle:  cfg.ChunkGCGrace,
			store: uploadStore{dir: filepath.Join(cfg.DataDir, uploadsDir)},
			log:   cfg.Logger.Named("uploads"),
		},
		metrics: newMetrics(cfg.Registry),
	}
	n.uploadMem.gauge = n.metrics.uploadBuffer
	if len(cfg.ClusterKey) == 0 && cfg.TLS == nil {
		n.log.Warn("no cluster key and no certificate: the cluster port is unauthenticated; anyone who reaches it can speak Raft to this node (-tls-cert/-tls-key/-tls-ca, or -cluster-key-file)")
	}
	n.trans, err = transport.New(transport.Config{
		BindAddr:      net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.ClusterPort)),
		AdvertiseAddr: advertise(cfg.Advertise, cfg.ClusterPort),
		ClusterKey:    cfg.ClusterKey,
		TLS:           cfg.TLS,
		Logger:        cfg.Logger.Named("transport"),
		Registerer:    cfg.Registry,
		Faults:        cfg.Faults,
		OnPeerDown:    n.peerDown,
		OnPeerUp:      n.peerUp,
		// Heartbeats to a peer travel together (idle cost); a read's
		// leadership check skips the wait (transport/heartbeat.go).
		HeartbeatBatch: heartbeatBatch,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: start transport: %w", err)
	}
	n.chunks, err = chunk.Open(filepath.Join(cfg.DataDir, "chunks"), chunk.Options{
		// Channels choose their chunk size (fsm.ValidateChunkSize).
		MaxChunkSize: fsm.MaxChunkSize,
		Logger:       cfg.Logger,
		Registerer:   cfg.Registry,
	})
	if err != nil {
		n.trans.Close()
		return nil, fmt.Errorf("cluster: open chunk store: %w", err)
	}
	// Before the collector starts: the uploads' chunks are pinned again.
	if err := n.loadUploads(); err != nil {
		n.chunks.Close()
		n.trans.Close()
		return nil, err
	}
	n.route = newRouter(n, n.trans.DialCall, n.trans.DialApp)
	n.hashSem = make(chan struct{}, hashCompareParallel)
	n.metaFSM = fsm.NewMeta()
	n.check = access.NewChecker(cfg.Token, n.metaFSM.Token, func(channel string) *fsm.ChannelSettings {
		if ch, ok := n.metaFSM.Channel(channel); ok {
			return ch.Settings
		}
		return nil
	})
	// Fenced server ids are refused before any group runs (metafence.go).
	if n.localFence, err = loadFence(cfg.DataDir); err != nil {
		n.trans.Close()
		return nil, err
	}
	n.trans.SetFence(n.isFenced)
	n.shards, err = shard.Open(shard.Config{
		DataDir:         cfg.DataDir,
		NodeID:          cfg.Name,
		ServerID:        n.serverID,
		Transport:       n.trans,
		Logger:          cfg.Logger.Named("shard"),
		Registry:        cfg.Registry,
		Raft:            cfg.ChannelRaft,
		MaxInFlight:     cfg.MaxInFlight,
		LogFS:           cfg.LogFS,
		KeyIndexBytes:   cfg.KeyIndexBytes,
		LeaderRebalance: cfg.LeaderRebalance,
		// Every replica compares its hashes with its peers' (hashcheck.go).
		HashCheckInterval: cfg.HashCheckInterval,
		CompareHash:       n.compareHash,
		// Until the meta state is restored and replayed this is 1 or a
		// version it has since raised: never above the cluster's.
		ClusterVersion: n.metaFSM.ClusterVersion,
		// A node the meta state places on a channel may replicate to its
		// replica here before this replica's configuration names it a
		// voter (shard/DESIGN.md "Who may send a group Raft RPCs").
		Placed: func(gid uint64, channel, node string) bool {
			ch, ok := n.metaFSM.Channel(channel)
			return ok && ch.GroupID == gid && placedOn(ch, node)
		},
	})
	if err != nil {
		n.chunks.Close()
		n.trans.Close()
		return nil, err
	}
	// A restart's time to serve is mostly this (docs/benchmarks.md "Idle
	// channels, real agents"): say how long it took.
	startedAt := time.Now()
	if err := n.shards.StartExisting(); err != nil {
		n.shards.Close()
		n.chunks.Close()
		n.trans.Close()
		return nil, err
	}
	if k := len(n.shards.Replicas()); k > 0 {
		n.log.Info("started the replicas found on disk", "replicas", k, "took", time.Since(startedAt).Round(time.Millisecond))
	}
	if cfg.Role == fsm.RoleResource {
		err = n.loadFollowed()
	}
	if err == nil {
		n.meta, err = openMeta(n)
	}
	if err != nil {
		n.shards.Close()
		n.chunks.Close()
		n.trans.Close()
		return nil, err
	}
	n.gossip, err = newGossip(&n.cfg, n.selfMeta(), n.poke)
	if err != nil {
		n.meta.shutdown()
		n.shards.Close()
		n.chunks.Close()
		n.trans.Close()
		return nil, err
	}
	n.started.Store(true)
	n.route.wg.Add(1)
	go n.route.serve(n.trans.CallListener())
	n.wg.Add(7)
	go n.runMetaLoop()
	go n.runLeaderLoop()
	go n.runReconciler()
	go n.runMembership()
	go n.runStatsLoop()
	go n.runScrubber()  // antientropy.go
	go n.runCollector() // collector.go
	if len(cfg.Join) > 0 {
		n.wg.Add(1)
		go n.retryJoin()
	}
	if cfg.Role == fsm.RoleResource {
		n.wg.Add(1)
		go n.runMetaFollow()
	}
	n.log.Info("node started", "id", cfg.Name, "role", cfg.Role, "cluster", n.trans.Addr(),
		"gossip", n.gossip.addr(), "http", cfg.HTTPAddr, "server_id", n.serverID)
	return n, nil
}

// peerDown is the transport prober's word that the node at addr stopped
// answering: the groups it leads, the meta group included, elect now rather
// than after their long idle timeouts (docs/design.md "D13", shard/failover.go).
// peerUp hears that the node at addr answers probes (again): the channel
// groups it is the preferred leader of may go back to it.
func (n *Node) peerUp(addr string) {
	if n.started.Load() {
		n.shards.PeerUp(addr)
	}
}

func (n *Node) peerDown(addr string) {
	if !n.started.Load() {
		return
	}
	n.shards.PeerDown(addr)
	if leader, _ := n.meta.raft.LeaderWithID(); string(leader) == addr && n.metaFast.CompareAndSwap(false, true) {
		// As the channel groups do: the surviving voters stand in server-id
		// order, and short timers are the fallback.
		if err := shard.ShortenTimers(n.meta.raft, n.meta.lease, n.isStopping); err != nil {
			n.log.Warn("meta group: failover timers not shortened", "error", err)
		}
		shard.Stand(n.meta.raft, n.meta.trans, n.serverID, addr, n.isStopping, func(err error) {
			if err != nil {
				n.log.Debug("meta group: could not stand for election", "error", err)
				return
			}
			n.metrics.metaElections.Inc()
			n.log.Info("meta leader's node is down: standing for election", "dead_leader", addr)
		})
		time.AfterFunc(5*time.Second, func() { n.metaFast.Store(false) })
	}
}

func (n *Node) isStopping() bool {
	select {
	case <-n.stop:
		return true
	default:
		return false
	}
}

// retryJoin joins the -join addresses, retrying until one answers: peers
// may start after us (Consul's retry-join).
func (n *Node) retryJoin() {
	defer n.wg.Done()
	for attempt := 0; ; attempt++ {
		err := n.gossip.join(n.cfg.Join)
		if err == nil || len(n.gossip.snapshot()) > 1 {
			return
		}
		if attempt == 5 {
			n.log.Warn("still cannot join any peer; retrying", "join", n.cfg.Join, "error", err)
		}
		select {
		case <-n.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

func advertise(host string, port int) string {
	if port == 0 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func (n *Node) selfMeta() nodeMeta {
	offered, free, used := n.diskUsage()
	return nodeMeta{
		DiskBytes: offered, DiskFree: free, DataBytes: used,
		ID: n.cfg.Name, ServerID: string(n.serverID), Role: n.cfg.Role, Zone: n.cfg.Zone,
		ClusterAddr: string(n.trans.Addr()), HTTPAddr: n.cfg.HTTPAddr,
		MaxReplicas: n.cfg.MaxReplicas, Stake: n.cfg.Stake,
		Operator: n.cfg.Operator, ServeData: n.cfg.ServeData || n.cfg.Role == fsm.RoleResource,
		ClusterID: n.meta.fsm.ClusterID(), HasState: n.meta.hadState,
		Version: fsm.Version, Fence: n.gossipFence(),
	}
}

// ID is the node's name.
func (n *Node) ID() string { return n.cfg.Name }

// ClusterAddr is the address of the node's cluster port.
func (n *Node) ClusterAddr() string { return string(n.trans.Addr()) }

// GossipAddr is the address other nodes -join.
func (n *Node) GossipAddr() string { return n.gossip.addr() }

// AppListener yields the streams nodes of the previous version open to
// forward requests to this node (route.go's compatibility note); the server
// serves them.
func (n *Node) AppListener() net.Listener { return n.trans.AppListener() }

// Shards exposes the node's replica manager (tests, bench).
func (n *Node) Shards() *shard.Manager { return n.shards }

// Chunks exposes the node's chunk store (tests).
func (n *Node) Chunks() *chunk.Store { return n.chunks }

// Meta exposes the node's copy of the meta state.
func (n *Node) Meta() *fsm.Meta { return n.meta.fsm }

// IsMetaLeader reports whether this node leads the meta group.
func (n *Node) IsMetaLeader() bool { return n.meta.raft.State() == raft.Leader }

// ServerID is the node's Raft server id in every group it is part of.
func (n *Node) ServerID() raft.ServerID { return n.serverID }

// MetaRaft reports this node's view of the meta group: its current term,
// its leader's server id ("" while none) and its latest configuration
// (tests: a refused RPC changes none of them).
func (n *Node) MetaRaft() (term uint64, leader raft.ServerID, conf raft.Configuration) {
	_, leader = n.meta.raft.LeaderWithID()
	if f := n.meta.raft.GetConfiguration(); f.Error() == nil {
		conf = f.Configuration()
	}
	return n.meta.raft.CurrentTerm(), leader, conf
}

// MetaLogFirstIndex is the first index this node's meta log holds, 0 when
// it holds none (tests: a log compacted behind a snapshot).
func (n *Node) MetaLogFirstIndex() uint64 {
	i, _ := n.meta.logs.FirstIndex()
	return i
}

// Close shuts the node down gracefully: leaves gossip, hands over the
// leadership of its groups, then stops replicas, the meta group and the
// transport.
func (n *Node) Close() error {
	var err error
	n.stopOnce.Do(func() {
		close(n.stop)
		n.gossip.leave()
		n.wg.Wait()
		errs := []error{n.shards.Close()}
		if n.meta.raft.State() == raft.Leader {
			_ = n.meta.raft.LeadershipTransfer().Error()
		}
		errs = append(errs, n.meta.shutdown(), n.trans.Close())
		n.route.close()
		errs = append(errs, n.chunks.Close())
		err = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return err
}

// Kill stops the node as a crash would: no gossip leave, no leadership
// hand-over; peers see it vanish. Files are closed so the same process can
// start it again (tests).
func (n *Node) Kill() error {
	var err error
	n.stopOnce.Do(func() {
		close(n.stop)
		n.gossip.shutdown()
		err = n.trans.Close()
		n.wg.Wait()
		err = errors.Join(err, n.shards.Kill(), n.meta.shutdown())
		n.route.close()
		err = errors.Join(err, n.chunks.Close())
	})
	return err
}

// writeFileAtomic replaces path with b, synced: a crash leaves the old
// file or the new one, never half of one.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func loadIdentity(dir, name string) (identity, error) {
	path := filepath.Join(dir, "node.json")
	b, err := os.ReadFile(path)
	if err == nil {
		var id identity
		if err := json.Unmarshal(b, &id); err != nil {
			return id, fmt.Errorf("cluster: read %s: %w", path, err)
		}
		if id.Format != 1 {
			return id, fmt.Errorf("cluster: %s: unknown format %d", path, id.Format)
		}
		if id.NodeID != name {
			return id, fmt.Errorf("cluster: data dir %s belongs to node %q, not %q", dir, id.NodeID, name)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return identity{}, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return identity{}, err
	}
	id := identity{Format: 1, NodeID: name, Incarnation: hex.EncodeToString(rnd[:])}
	b, _ = json.Marshal(id)
	if err := writeFileAtomic(path, b, 0o644); err != nil {
		return id, fmt.Errorf("cluster: write identity: %w", err)
	}
	return id, nil
}
