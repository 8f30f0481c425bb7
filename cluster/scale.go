package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Scaling a channel (PATCH /v1/channels/{ch}): the meta leader computes the
// new placement and commits it (SetPlacement, refused if the channel
// changed since it was read); the channel's leader then converges its group
// to it (membership.go).

// maxChannelReplicas bounds a channel's replicas, at creation and after.
const maxChannelReplicas = 7

// ChangeChannel changes a channel's replica count or quota, on the meta
// leader (one hop there through the router).
func (n *Node) ChangeChannel(ctx context.Context, name string, req api.ChangeChannelRequest) (api.Channel, error) {
	// Refused where the request arrived when the cluster cannot apply it
	// yet: a node of the previous release would not know the command.
	if err := fsm.CheckVersion(fsm.MetaVersion(&fsm.SetPlacement{}), n.meta.fsm.ClusterVersion()); err != nil {
		return api.Channel{}, fmt.Errorf("cluster: %w", err)
	}
	if req.ChunkSize != nil {
		if err := fsm.CheckVersion(fsm.MetaVersion(&fsm.SetChannelChunkSize{}), n.meta.fsm.ClusterVersion()); err != nil {
			return api.Channel{}, fmt.Errorf("cluster: chunk_size: %w", err)
		}
	}
	if err := validChange(req); err != nil {
		return api.Channel{}, err
	}
	var out api.Channel
	err := n.route.do(ctx, "change_channel", func(ctx context.Context) (err error) {
		out, err = n.changeChannel(ctx, name, req)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		err = n.route.metaJSON(ctx, "change_channel", rcChangeChannel, re, changeCall{Channel: name, Change: req}, &out)
		return n.seeMetaWrite(ctx, err)
	})
	return out, err
}

func validChange(req api.ChangeChannelRequest) error {
	if req.Replicas == nil && req.QuotaBytes == nil && req.ChunkSize == nil {
		return fmt.Errorf("%w: nothing to change: give replicas, quota_bytes or chunk_size", ErrInvalidRequest)
	}
	if req.ChunkSize != nil && *req.ChunkSize != 0 {
		if err := fsm.ValidateChunkSize(*req.ChunkSize); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
		}
	}
	if req.Replicas != nil && (*req.Replicas < 1 || *req.Replicas > maxChannelReplicas) {
		return fmt.Errorf("%w: replicas must be 1..%d, not %d", ErrInvalidRequest, maxChannelReplicas, *req.Replicas)
	}
	return nil
}

// changeChannel is ChangeChannel on this node, which must lead the meta
// group. The request is checked whole before anything is proposed; the
// placement goes first, then the quota (two entries: a quota alone never
// waits for a placement).
func (n *Node) changeChannel(ctx context.Context, name string, req api.ChangeChannelRequest) (api.Channel, error) {
	if err := validChange(req); err != nil {
		return api.Channel{}, err
	}
	if n.meta.raft.State() != raft.Leader {
		return api.Channel{}, n.metaRedirect()
	}
	ch, ok := n.meta.fsm.Channel(name)
	if !ok {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelNotFound, name)
	}
	var placement []fsm.Replica
	if req.Replicas != nil && *req.Replicas != len(ch.Placement) {
		if len(ch.Nodes) > 0 {
			return api.Channel{}, fmt.Errorf("%w: channel %q is pinned to nodes %v; a pinned channel keeps its nodes", ErrInvalidRequest, name, ch.Nodes)
		}
		var err error
		placement, err = rescale(n.meta.fsm.Nodes(), n.meta.fsm.Channels(), ch, *req.Replicas, n.channelLeader(ctx, ch))
		if err != nil {
			return api.Channel{}, err
		}
	}
	if placement != nil {
		res, err := n.proposeMeta(ctx, &fsm.SetPlacement{Channel: name, Placement: placement, Expect: ch.ModifyIndex})
		if err != nil {
			return api.Channel{}, err
		}
		if err := placementErr(res.Err, name); err != nil {
			return api.Channel{}, err
		}
		n.log.Info("channel scaled", "channel", name, "from", len(ch.Placement), "to", len(placement), "placement", nodeIDs(placement))
	}
	if req.QuotaBytes != nil && *req.QuotaBytes != ch.QuotaBytes {
		res, err := n.proposeMeta(ctx, &fsm.SetChannelQuota{Channel: name, QuotaBytes: *req.QuotaBytes})
		if err != nil {
			return api.Channel{}, err
		}
		if err := placementErr(res.Err, name); err != nil {
			return api.Channel{}, err
		}
	}
	if req.ChunkSize != nil && *req.ChunkSize != ch.ChunkSize {
		res, err := n.proposeMeta(ctx, &fsm.SetChannelChunkSize{Channel: name, ChunkSize: *req.ChunkSize})
		if err != nil {
			return api.Channel{}, err
		}
		if err := placementErr(res.Err, name); err != nil {
			return api.Channel{}, err
		}
		n.log.Info("channel chunk size changed", "channel", name, "from", ChunkSizeOf(ch), "to", *req.ChunkSize)
	}
	ch, ok = n.meta.fsm.Channel(name)
	if !ok {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelNotFound, name)
	}
	return n.describe(ctx, ch, false), nil
}

func placementErr(err error, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fsm.ErrChannelNotFound):
		return fmt.Errorf("%w: %q", ErrChannelNotFound, name)
	case errors.Is(err, fsm.ErrPlacementChanged):
		return fmt.Errorf("%w: channel %q", ErrPlacementChanged, name)
	case errors.Is(err, fsm.ErrInvalidPlacement), errors.Is(err, fsm.ErrInvalidChunkSize):
		return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	return err
}

// channelLeader is the node that leads ch's group, "" if none answers.
func (n *Node) channelLeader(ctx context.Context, ch fsm.ChannelRecord) string {
	for _, nd := range n.placedNodes(ch) {
		if nd.State != fsm.NodeAlive {
			continue
		}
		if info, err := n.route.replicaInfo(ctx, nd, ch.GroupID); err == nil && info.Leader != "" {
			return info.Leader
		}
	}
	return ""
}

// rescale is ch's placement with want replicas: the replicas it keeps keep
// their server ids (and so their data and votes). Growing, the added nodes
// are chosen by the creation allocator (place) among the nodes that do not
// hold the channel: alive, with room, by load and zone, and for a
// dedicated channel only empty nodes. Shrinking drops first the replicas
// on nodes that are not alive, then those whose zone another kept replica
// shares, then those whose operator another kept replica shares (the
// spread survives, as the allocator made it), never the leader while
// another can go, the latest added first. A pure function.
func rescale(nodes []fsm.NodeRecord, channels []fsm.ChannelRecord, ch fsm.ChannelRecord, want int, leader string) ([]fsm.Replica, error) {
	have := len(ch.Placement)
	if want > have {
		var free []fsm.NodeRecord
		for _, nd := range nodes {
			if !ch.HasNode(nd.ID) {
				free = append(free, nd)
			}
		}
		others := slices.DeleteFunc(slices.Clone(channels), func(c fsm.ChannelRecord) bool { return c.Name == ch.Name })
		req := PlaceRequest{Replicas: want - have, Dedicated: ch.Dedicated, Zones: ch.Zones}
		added, err := place(free, others, req)
		if errors.Is(err, ErrNotEnoughNodes) {
			// How many would do: the most place() finds (it says how
			// many it needs, not how many there are).
			found := 0
			for k := req.Replicas - 1; k > 0; k-- {
				req.Replicas = k
				if _, e := place(free, others, req); e == nil {
					found = k
					break
				}
			}
			what := "alive, with room, not holding it"
			if ch.Dedicated {
				what = "alive, hosting no other channel"
			}
			return nil, fmt.Errorf("%w: channel %q needs %d replicas, %d placed: %d more wanted, %d eligible nodes (%s)",
				ErrNotEnoughNodes, ch.Name, want, have, want-have, found, what)
		}
		if err != nil {
			return nil, fmt.Errorf("channel %q: %w", ch.Name, err)
		}
		return append(slices.Clone(ch.Placement), added...), nil
	}
	byID := map[string]fsm.NodeRecord{}
	for _, nd := range nodes {
		byID[nd.ID] = nd
	}
	zones, ops := map[string]int{}, map[string]int{}
	for _, r := range ch.Placement {
		nd := byID[r.NodeID]
		zones[nd.Zone]++
		ops[nd.Operator]++
	}
	// score: lower goes first. Recomputed after every drop, so that of two
	// replicas sharing a zone (or an operator) only one goes.
	score := func(r fsm.Replica) [4]int {
		nd, ok := byID[r.NodeID]
		alive := 1
		if !ok || nd.State != fsm.NodeAlive {
			alive = 0
		}
		zoneShared, opShared := 1, 1
		if zones[nd.Zone] > 1 {
			zoneShared = 0
		}
		if ops[nd.Operator] > 1 {
			opShared = 0
		}
		isLeader := 0
		if r.NodeID == leader {
			isLeader = 1
		}
		return [4]int{alive, zoneShared, opShared, isLeader}
	}
	drop := map[string]bool{}
	for len(drop) < have-want {
		var pick fsm.Replica
		var best [4]int
		found := false
		for _, r := range ch.Placement {
			if drop[r.ServerID] {
				continue
			}
			sc := score(r)
			if c := slices.Compare(sc[:], best[:]); !found || c < 0 || (c == 0 && r.Added > pick.Added) {
				pick, best, found = r, sc, true
			}
		}
		drop[pick.ServerID] = true
		nd := byID[pick.NodeID]
		zones[nd.Zone]--
		ops[nd.Operator]--
	}
	return slices.DeleteFunc(slices.Clone(ch.Placement), func(r fsm.Replica) bool { return drop[r.ServerID] }), nil
}

// progress says whether the group's configuration, as best (the leader's
// view if it answered, or a replica's) has it, is the placement.
func progress(ch fsm.ChannelRecord, best *shard.ReplicaInfo) string {
	if best == nil || best.State != raft.Leader.String() {
		if best == nil {
			return api.ProgressUnknown
		}
		return api.ProgressConverging
	}
	want := serverIDs(ch.Placement)
	got := slices.Clone(best.ConfigServers)
	slices.Sort(want)
	slices.Sort(got)
	if len(best.NonVoters) == 0 && slices.Equal(want, got) {
		return api.ProgressConverged
	}
	return api.ProgressConverging
}

// changeCall is the head of rcChangeChannel, as JSON; the answer is the
// JSON of the api.Channel.
type changeCall struct {
	Channel string                   `json:"channel"`
	Change  api.ChangeChannelRequest `json:"change"`
}

func (r *router) serveChangeChannel(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	var c changeCall
	if err := json.Unmarshal(head, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: malformed change call: %v", ErrInvalidRequest, err)
	}
	ch, err := r.n.changeChannel(ctx, c.Channel, c.Change)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(ch)
	return b, nil, err
}
