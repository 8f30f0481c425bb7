package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// What the HTTP server calls. Every method answers from this node's state
// or, through the router, from the node that can answer (route.go); the
// server only turns errors into statuses.

// Status describes this node and the meta leader.
func (n *Node) Status(ctx context.Context) (api.Status, error) {
	st := api.Status{
		NodeID: n.cfg.Name, Role: n.cfg.Role, Zone: n.cfg.Zone,
		ClusterAddr: n.ClusterAddr(), HTTPAddr: n.cfg.HTTPAddr, GossipAddr: n.GossipAddr(),
		ClusterID: n.meta.fsm.ClusterID(), Replicas: len(n.shards.Replicas()), Version: Version,
		ClusterVersion: n.meta.fsm.ClusterVersion(), SupportedVersion: fsm.Version,
		Fenced: n.MetaFenced(),
		Chunks: n.chunks.Count(), ChunkBytes: n.chunks.Bytes(),
	}
	if _, id := n.metaLeader(); id != "" {
		st.MetaLeader = shard.NodeOf(id)
		if nd, ok := n.meta.fsm.Node(st.MetaLeader); ok {
			st.MetaLeaderHTTP = nd.HTTPAddr
		}
	}
	return st, nil
}

// Ready reports whether the node can serve: it knows a meta leader and its
// copy of the meta state has caught up with the commit index.
func (n *Node) Ready(ctx context.Context) error {
	if _, id := n.metaLeader(); id == "" {
		return ErrNoMetaLeader
	}
	if !n.metaCaughtUp() {
		return ErrNotReady
	}
	return n.metaSound()
}

// metaSound is nil unless a hash check found this node's copy of the meta
// state other than the meta group's: then nothing is answered from it (the
// node list, channel descriptions, the routing of channel requests) until
// a restart rebuilds it from the meta log. A 503 not_ready is retryable:
// a client goes on through another node.
func (n *Node) metaSound() error {
	if c := n.metaCorrupt.Load(); c != nil {
		return fmt.Errorf("%w: a hash check at meta index %d found this node's copy of the meta state other than the meta group's; restart the node", ErrNotReady, c.Index)
	}
	return nil
}

// metaCaughtUp reports whether the local meta FSM has been handed every
// entry this node knows to be committed. A restarted node learns the commit
// index only from the leader's first append, so until then it is not caught
// up. raft's AppliedIndex counts no-op and configuration entries, which the
// FSM never sees (docs/raft-notes.md "R2"), so comparing the FSM's own index with the
// commit index could stay false forever.
func (n *Node) metaCaughtUp() bool {
	if n.follow.watching.Load() {
		// Followed by watch: a live stream has sent everything its
		// core node applied.
		return n.follow.live.Load()
	}
	commit := n.meta.raft.CommitIndex()
	return commit > 0 && n.meta.raft.AppliedIndex() >= commit
}

// Nodes lists the registry with each node's replica count.
func (n *Node) Nodes(ctx context.Context) ([]api.Node, error) {
	if err := n.metaSound(); err != nil {
		return nil, err
	}
	load := map[string]int{}
	for _, ch := range n.meta.fsm.Channels() {
		for _, r := range ch.Placement {
			load[r.NodeID]++
		}
	}
	var out []api.Node
	for _, nd := range n.meta.fsm.Nodes() {
		out = append(out, api.Node{
			ID: nd.ID, Role: nd.Role, Zone: nd.Zone, Operator: nd.Operator, State: nd.State, ServeData: nd.HostsData(),
			ClusterAddr: nd.ClusterAddr, HTTPAddr: nd.HTTPAddr, GossipAddr: nd.GossipAddr,
			Capacity:         api.Capacity{DiskBytes: nd.DiskBytes, DiskFreeBytes: nd.DiskFree, MaxReplicas: nd.MaxReplicas},
			Usage:            api.NodeUsage{Replicas: load[nd.ID], DiskBytes: nd.DataBytes},
			Stake:            nd.Stake,
			SupportedVersion: nd.SupportedVersion(),
		})
	}
	return out, nil
}

// CreateChannel places and records a channel, on the meta leader.
func (n *Node) CreateChannel(ctx context.Context, req api.CreateChannelRequest) (api.Channel, error) {
	var ch api.Channel
	err := n.route.do(ctx, "create_channel", func(ctx context.Context) (err error) {
		ch, err = n.createChannel(ctx, req)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		ch, err = n.route.createChannel(ctx, re, req)
		return n.seeMetaWrite(ctx, err)
	})
	return ch, err
}

// createChannel is CreateChannel on this node, which must lead the meta
// group (else a redirect to the leader).
func (n *Node) createChannel(ctx context.Context, req api.CreateChannelRequest) (api.Channel, error) {
	return n.createChannelFrom(ctx, req, nil)
}

// createChannelFrom is createChannel of a channel restored from a backup
// when restore is set (backup.go): its first replica seeds the group.
func (n *Node) createChannelFrom(ctx context.Context, req api.CreateChannelRequest, restore *fsm.RestoreSource) (api.Channel, error) {
	if !fsm.ValidChannelName(req.Name) {
		return api.Channel{}, fmt.Errorf("%w: channel name %q must be 1-63 characters of a-z, 0-9 and -", ErrInvalidRequest, req.Name)
	}
	if req.Replicas == 0 {
		req.Replicas = 3
		if len(req.Nodes) > 0 {
			req.Replicas = len(req.Nodes)
		}
	}
	if req.Replicas < 1 || req.Replicas > 7 {
		return api.Channel{}, fmt.Errorf("%w: replicas must be 1..7, not %d", ErrInvalidRequest, req.Replicas)
	}
	if len(req.Nodes) > 0 && len(req.Nodes) != req.Replicas {
		return api.Channel{}, fmt.Errorf("%w: %d pinned nodes for %d replicas", ErrInvalidRequest, len(req.Nodes), req.Replicas)
	}
	if req.ChunkSize != 0 {
		if err := fsm.ValidateChunkSize(req.ChunkSize); err != nil {
			return api.Channel{}, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
		}
	}
	if n.meta.raft.State() != raft.Leader {
		return api.Channel{}, n.metaRedirect()
	}
	if _, ok := n.meta.fsm.Channel(req.Name); ok {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelExists, req.Name)
	}
	placement, err := place(n.meta.fsm.Nodes(), n.meta.fsm.Channels(), PlaceRequest{
		Replicas: req.Replicas, Dedicated: req.Dedicated, Zones: req.Zones, Nodes: req.Nodes,
	})
	if err != nil {
		return api.Channel{}, err
	}
	rec := fsm.ChannelRecord{
		Name: req.Name, Replicas: req.Replicas, Dedicated: req.Dedicated, Zones: req.Zones,
		Nodes: req.Nodes, QuotaBytes: req.QuotaBytes, ChunkSize: req.ChunkSize, Placement: placement,
	}
	var cmd fsm.MetaCommand = &fsm.CreateChannel{Channel: rec}
	if restore != nil {
		src := *restore
		src.ServerID = placement[0].ServerID // the seeding replica
		rec.Restore = &src
		cmd = &fsm.CreateRestoredChannel{Channel: rec}
	}
	res, err := n.proposeMeta(ctx, cmd)
	if err != nil {
		return api.Channel{}, err
	}
	if errors.Is(res.Err, fsm.ErrChannelExists) {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelExists, req.Name)
	} else if res.Err != nil {
		return api.Channel{}, res.Err
	}
	ch, _ := n.meta.fsm.Channel(req.Name)
	n.log.Info("channel created", "channel", ch.Name, "group", ch.GroupID, "placement", nodeIDs(ch.Placement))
	out := n.describe(ctx, ch, false)
	if n.tokensSupported() {
		// A second entry: a CreateChannel that carried the token would be
		// applied by a node of an older release without it.
		tok, err := n.issueToken(ctx, ch, fsm.ScopeReadWrite, time.Time{})
		if err != nil {
			// The channel exists; the operator token can issue one.
			n.log.Warn("channel created without a token", "channel", ch.Name, "error", err)
		} else {
			out.Token = tok.Token
		}
	}
	return out, nil
}

func nodeIDs(rs []fsm.Replica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.NodeID
	}
	return out
}

// DeleteChannel forgets a channel, on the meta leader; every replica
// removes itself.
func (n *Node) DeleteChannel(ctx context.Context, name string) error {
	return n.route.do(ctx, "delete_channel", func(ctx context.Context) error {
		return n.deleteChannel(ctx, name)
	}, func(ctx context.Context, re *shard.RedirectError) error {
		return n.seeMetaWrite(ctx, n.route.deleteChannel(ctx, re, name))
	})
}

func (n *Node) deleteChannel(ctx context.Context, name string) error {
	if n.meta.raft.State() != raft.Leader {
		return n.metaRedirect()
	}
	res, err := n.proposeMeta(ctx, &fsm.DeleteChannel{Name: name})
	if err != nil {
		return err
	}
	if errors.Is(res.Err, fsm.ErrChannelNotFound) {
		return fmt.Errorf("%w: %q", ErrChannelNotFound, name)
	}
	return res.Err
}

// Channels lists every channel with what this node knows of its health.
func (n *Node) Channels(ctx context.Context) ([]api.Channel, error) {
	if err := n.metaSound(); err != nil {
		return nil, err
	}
	out := []api.Channel{}
	for _, ch := range n.meta.fsm.Channels() {
		out = append(out, n.describe(ctx, ch, false))
	}
	return out, nil
}

// Channel describes one channel, asking each replica for its state.
func (n *Node) Channel(ctx context.Context, name string) (api.Channel, error) {
	if err := n.metaSound(); err != nil {
		return api.Channel{}, err
	}
	ch, ok := n.meta.fsm.Channel(name)
	if !ok {
		// A channel created a moment ago through another node may not be
		// applied here yet: catch up with the meta leader's commit index
		// before saying it does not exist (metaread.go).
		if err := n.metaSync(ctx); err != nil {
			return api.Channel{}, fmt.Errorf("%w (looking for channel %q)", err, name)
		}
		if ch, ok = n.meta.fsm.Channel(name); !ok {
			return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelNotFound, name)
		}
	}
	return n.describe(ctx, ch, true), nil
}

// describe builds a channel's description. With askAll every placed replica
// is asked for its state (GET /v1/channels/{ch}); otherwise only one, the
// local replica or the first alive placed node, which tells the leader,
// voters and usage but not each replica's health (the listing).
func (n *Node) describe(ctx context.Context, ch fsm.ChannelRecord, askAll bool) api.Channel {
	out := api.Channel{
		Name: ch.Name, GroupID: ch.GroupID, Replicas: ch.Replicas, Dedicated: ch.Dedicated,
		Zones: ch.Zones, Nodes: ch.Nodes, QuotaBytes: ch.QuotaBytes, ChunkSize: uint64(ChunkSizeOf(ch)), CreateIndex: ch.CreateIndex,
		Placement: []api.Replica{}, Voters: []string{}, Settings: APISettings(ch.Settings),
	}
	var ask []fsm.NodeRecord
	for _, nd := range n.placedNodes(ch) {
		if nd.ID == n.cfg.Name || nd.State == fsm.NodeAlive {
			ask = append(ask, nd)
		}
	}
	if !askAll {
		for _, nd := range ask {
			if nd.ID == n.cfg.Name {
				ask = []fsm.NodeRecord{nd}
				break
			}
		}
		if len(ask) > 1 {
			ask = ask[:1]
		}
	}
	infos := make([]*shard.ReplicaInfo, len(ask))
	errs := make([]error, len(ask))
	var wg sync.WaitGroup
	for i, nd := range ask {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.route.replicaInfo(ctx, nd, ch.GroupID)
			infos[i], errs[i] = &info, err
		}()
	}
	wg.Wait()
	byNode := map[string]*shard.ReplicaInfo{}
	starting := map[string]bool{}
	var best *shard.ReplicaInfo // the leader's view if we have it
	for i, nd := range ask {
		switch {
		case errs[i] == nil:
			byNode[nd.ID] = infos[i]
			if best == nil || infos[i].State == "Leader" {
				best = infos[i]
			}
		case errors.Is(errs[i], shard.ErrNotHosted):
			starting[nd.ID] = true
		}
	}
	if best != nil {
		out.Leader = best.Leader
		out.Voters = append(out.Voters, best.Voters...)
		out.NonVoters = best.NonVoters
		out.Usage = api.ChannelUsage{Keys: best.Keys, Bytes: best.Bytes}
	}
	if askAll || (best != nil && best.State == raft.Leader.String()) {
		// The listing asks one replica: a follower's view does not say.
		out.Progress = progress(ch, best)
	}
	healthy := 0
	for _, r := range ch.Placement {
		rep := api.Replica{NodeID: r.NodeID, ServerID: r.ServerID, State: "unknown", Voter: slices.Contains(out.Voters, r.NodeID)}
		if info, ok := byNode[r.NodeID]; ok {
			rep.Applied, rep.State = info.Applied, stateName(info.State)
			rep.Healthy = info.Corrupt == nil && (info.State == "Leader" || (info.State == "Follower" && info.Leader != ""))
			if info.Corrupt != nil {
				rep.HashMismatch, rep.HashMismatchIndex = true, info.Corrupt.Index
			}
		} else if starting[r.NodeID] {
			rep.State = "starting"
		}
		if rep.Healthy {
			healthy++
		}
		out.Placement = append(out.Placement, rep)
	}
	switch {
	case out.Leader == "":
		out.Health = "no_leader"
	case !askAll:
		out.Health = "ok" // a leader is known; `channel get` checks each replica
	case healthy == len(ch.Placement):
		out.Health = "healthy"
	case healthy > len(ch.Placement)/2:
		out.Health = "degraded"
	default:
		out.Health = "unavailable"
	}
	return out
}

func stateName(s string) string {
	switch s {
	case "Leader":
		return "leader"
	case "Follower":
		return "follower"
	case "Candidate":
		return "candidate"
	case "Shutdown":
		return "stopped"
	}
	return s
}

// Propose commits a channel command on the channel's leader: here when this
// node leads, else on the leader's node through one call (route.go).
func (n *Node) Propose(ctx context.Context, channel string, cmd []byte) (*fsm.Result, error) {
	// The cluster version admitVersion reads is the meta copy's: a node
	// that just started would read 1 (metacurrent.go).
	if err := n.metaCurrentSinceStart(ctx); err != nil {
		return nil, err
	}
	if err := n.admitVersion(cmd); err != nil {
		return nil, err
	}
	var res *fsm.Result
	var gid uint64
	err := n.route.do(ctx, "propose", func(ctx context.Context) (err error) {
		res, gid, err = n.proposeHere(ctx, channel, cmd)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		res, err = n.route.propose(ctx, re, gid, cmd)
		return err
	})
	return res, err
}

// proposeHere proposes cmd on the local replica of channel if it leads (or
// once it knows a leader, when it knows none yet), and returns the group's
// id; a redirect names the leader, and means nothing was proposed.
func (n *Node) proposeHere(ctx context.Context, channel string, cmd []byte) (*fsm.Result, uint64, error) {
	rep, err := n.localReplica(ctx, channel, true)
	if err != nil {
		var gid uint64
		if ch, ok := n.meta.fsm.Channel(channel); ok {
			gid = ch.GroupID
		}
		return nil, gid, err
	}
	res, err := n.proposeLocal(ctx, rep, cmd)
	if errors.Is(err, shard.ErrNoLeader) && n.awaitLeader(ctx, rep, "") {
		res, err = n.proposeLocal(ctx, rep, cmd)
	}
	return res, rep.GroupID, err
}

// proposeLocal proposes cmd on rep if it leads, after the cluster layer's
// admission step (admitQuota); the shard layer runs its own (Replica.admit).
func (n *Node) proposeLocal(ctx context.Context, rep *shard.Replica, cmd []byte) (*fsm.Result, error) {
	if err := n.admitQuota(rep, cmd); err != nil {
		return nil, err
	}
	n.recordConfiguration(rep, cmd) // files.go
	return rep.Propose(ctx, cmd)
}

// admitVersion refuses, on the node the request arrived at, a command
// newer than the cluster version: the leader it would be sent to may run a
// release that checks no version and would commit an entry that nodes of
// that release cannot apply. The leader checks again (Replica.admit).
func (n *Node) admitVersion(cmd []byte) error {
	v := fsm.EntryVersion(cmd)
	if v <= 1 {
		return nil
	}
	if err := fsm.CheckVersion(v, n.meta.fsm.ClusterVersion()); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// admitQuota refuses a command that may grow a channel past its quota
// (meta state). Checked on the leader before proposing, so the quota can be
// passed by at most the writes already in flight.
func (n *Node) admitQuota(rep *shard.Replica, cmd []byte) error {
	ch, ok := n.meta.fsm.Channel(rep.Channel)
	if !ok || ch.QuotaBytes == 0 || !fsm.MayGrow(cmd) {
		return nil
	}
	if used := rep.FSM().Stats().Bytes; used+uint64(len(cmd)) > ch.QuotaBytes {
		return fmt.Errorf("%w: channel %q uses %d of its %d bytes", ErrQuotaExceeded, rep.Channel, used, ch.QuotaBytes)
	}
	return nil
}

// Get reads one key once a read at level is allowed: from the local
// replica, else from a replica of the node the router finds.
func (n *Node) Get(ctx context.Context, channel string, key []byte, level shard.ReadLevel) (e fsm.Entry, found bool, applied uint64, err error) {
	err = n.route.do(ctx, "get", func(ctx context.Context) (err error) {
		e, found, applied, err = n.getHere(ctx, channel, key, level)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		e, found, applied, err = n.route.get(ctx, re, channel, key, level)
		return err
	})
	return e, found, applied, err
}

func (n *Node) getHere(ctx context.Context, channel string, key []byte, level shard.ReadLevel) (fsm.Entry, bool, uint64, error) {
	rep, err := n.readable(ctx, channel, level)
	if err != nil {
		return fsm.Entry{}, false, 0, err
	}
	applied := rep.FSM().Applied()
	e, found, err := rep.FSM().Get(key)
	return e, found, applied, err
}

// List reads a page of keys once a read at level is allowed, as Get does.
func (n *Node) List(ctx context.Context, channel string, prefix, after []byte, limit int, level shard.ReadLevel) (es []fsm.Entry, more bool, applied uint64, err error) {
	err = n.route.do(ctx, "list", func(ctx context.Context) (err error) {
		es, more, applied, err = n.listHere(ctx, channel, prefix, after, limit, level)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		es, more, applied, err = n.route.list(ctx, re, channel, prefix, after, limit, level)
		return err
	})
	return es, more, applied, err
}

func (n *Node) listHere(ctx context.Context, channel string, prefix, after []byte, limit int, level shard.ReadLevel) ([]fsm.Entry, bool, uint64, error) {
	rep, err := n.readable(ctx, channel, level)
	if err != nil {
		return nil, false, 0, err
	}
	applied := rep.FSM().Applied()
	es, more, err := rep.FSM().List(prefix, after, limit)
	return es, more, applied, err
}

// WaitKey blocks until key changes past index in the local replica, or in
// one of the node the router finds (a call held for the wait).
func (n *Node) WaitKey(ctx context.Context, channel string, key []byte, index uint64) error {
	return n.route.do(ctx, "watch", func(ctx context.Context) error {
		rep, err := n.localReplica(ctx, channel, false)
		if err != nil {
			return err
		}
		return rep.FSM().WaitKey(ctx, key, index)
	}, func(ctx context.Context, re *shard.RedirectError) error {
		return n.route.watch(ctx, re, channel, key, index)
	})
}

// Lag is how long ago the local replica of channel last heard its leader.
func (n *Node) Lag(channel string) time.Duration {
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		return 0
	}
	if rep, ok := n.shards.Replica(ch.GroupID); ok {
		return rep.Lag()
	}
	return 0
}

// leaderWait bounds how long a request waits for the local replica to learn
// its leader (an election, or a replica that was created after its group
// elected) before it is answered 503 no_leader.
const leaderWait = 2 * time.Second

// awaitLeader waits until rep knows a leader other than the one at the
// cluster address not (true), ctx ends or leaderWait passes.
func (n *Node) awaitLeader(ctx context.Context, rep *shard.Replica, not string) bool {
	return n.waitFor(ctx, 10*time.Millisecond, func() bool {
		addr, id := rep.Raft().LeaderWithID()
		return id != "" && (not == "" || string(addr) != not)
	})
}

// waitFor checks done at once and then every interval until it holds
// (true), or ctx ends, the node stops or leaderWait passes (false).
func (n *Node) waitFor(ctx context.Context, every time.Duration, done func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return false
		case <-n.stop:
			return false
		case <-tick.C:
		}
	}
	return true
}

func (n *Node) readable(ctx context.Context, channel string, level shard.ReadLevel) (*shard.Replica, error) {
	rep, err := n.localReplica(ctx, channel, level != shard.Stale)
	if err != nil {
		return nil, err
	}
	if rep.Corrupt() != nil {
		// A hash check found this replica's state wrong: the leader
		// serves the read, whatever its level.
		return nil, corruptRedirect(rep)
	}
	err = rep.ReadBarrier(ctx, level)
	if errors.Is(err, shard.ErrNoLeader) && n.awaitLeader(ctx, rep, "") {
		err = rep.ReadBarrier(ctx, level)
	}
	var re *shard.RedirectError
	if err != nil && level != shard.Stale && errors.As(err, &re) && errors.Is(err, shard.ErrNotLeader) {
		if n.followerRead(ctx, rep) == nil {
			return rep, nil
		}
		// Forward, to the leader as the replica knows it now (it may
		// have moved, or be this replica, since the read arrived).
		err = rep.ReadBarrier(ctx, level)
	}
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// corruptRedirect is a corrupt replica's answer to a read: forward it to
// the leader when another replica leads, else ErrReplicaCorrupt.
func corruptRedirect(rep *shard.Replica) error {
	err := fmt.Errorf("%w: channel %q", shard.ErrReplicaCorrupt, rep.Channel)
	info := rep.Info()
	if info.Leader == "" || info.State == "Leader" {
		return err
	}
	return &shard.RedirectError{Err: err, NodeID: info.Leader, Addr: info.LeaderAddr}
}

func (n *Node) localReplica(ctx context.Context, channel string, wantLeader bool) (*shard.Replica, error) {
	if err := n.metaSound(); err != nil {
		return nil, err
	}
	// Not before this node's meta copy is current (metacurrent.go).
	if err := n.metaCurrentSinceStart(ctx); err != nil {
		return nil, err
	}
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		// (A local replica no longer speaks for a channel its meta copy
		// does not know: the copy is current since the start, so the
		// channel was deleted, or created a moment ago.)
		// This node's copy of the meta state may trail the meta group
		// (it has not heard or not applied the commit index of a create
		// acknowledged a moment ago): a stale read of the control plane.
		// Catch up with the meta leader's commit index first; only a
		// node that reaches no meta leader answers not_ready.
		if err := n.metaSync(ctx); err != nil {
			return nil, fmt.Errorf("%w (channel %q is not known here yet)", err, channel)
		}
		if ch, ok = n.meta.fsm.Channel(channel); !ok {
			return nil, fmt.Errorf("%w: %q", ErrChannelNotFound, channel)
		}
	}
	rep, ok := n.shards.Replica(ch.GroupID)
	switch {
	case ok:
		return rep, nil
	case servedCall(ctx):
		// Another node sent the request here: it is answered here or
		// refused, never sent on (route.go).
		return nil, fmt.Errorf("%w: channel %q (group %d)", shard.ErrNotHosted, channel, ch.GroupID)
	}
	return nil, n.route.remoteRedirect(ctx, ch, wantLeader)
}

// DialNode opens a stream to the HTTP API of a node of the previous
// version over the cluster port (the server forwards a request there on a
// *PreviousVersionError; remove with route.go's compatibility note). A
// node that cannot be reached is no longer anyone's cached leader.
func (n *Node) DialNode(ctx context.Context, addr string) (net.Conn, error) {
	c, err := n.trans.DialApp(ctx, addr)
	if err != nil {
		n.route.leaderUnreachable(addr)
	}
	return c, err
}
