package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Quorum-loss recovery of a channel (docs/operations.md "Recovering a
// channel that lost a quorum"). When a majority of a channel's replicas are
// gone for good its group can never commit again. RecoverChannel re-forms
// it from the surviving replica whose log is the most advanced (highest
// last term, then last index):
//
//  1. every placed replica is asked for its log's last term and index
//     (rcRecoverInfo); if a majority answers, the channel is refused: it
//     has a quorum, or will when its nodes are back;
//  2. the best survivor retires its replica (rcRetire, shard.Manager.Retire):
//     stops it, applies its whole log to its state machine, committed or
//     not, and writes the state to its restores dir, as an upload;
//  3. the meta leader records RecoverChannel: the channel gets a NEW group
//     id, the survivor first in a placement that leaves out every lost
//     node, and the old group is retired (ChannelRecord.RetiredGroups);
//  4. the survivor seeds the new group from its file (as a restore does,
//     backup.go), the other replicas start empty and get its snapshot.
//
// Fencing: the new group is another Raft group on the transport, whose
// replicas take Raft RPCs only from its own voters (shard.VoterCheck), so
// replicas of the old group, lost ones that come back included, can never
// vote in it or lead it; their nodes remove them as soon as their copy of
// the meta state shows the channel's new group. A lost node that comes
// back keeps its old group's replica until then (seconds), and two such
// nodes may elect a leader of the OLD group in that time; nothing is served
// from it: a node that starts serves no channel until its meta copy is
// current, and then the channel maps to its new group (metacurrent.go).

// recoverConfirm is what a recover request must carry.
const recoverConfirm = "i-understand-data-loss"

// RecoverInfo is a replica's answer to rcRecoverInfo.
type recoverInfo struct {
	Node      string `json:"node"`
	LastIndex uint64 `json:"last_index"`
	LastTerm  uint64 `json:"last_term"`
	Applied   uint64 `json:"applied"`
	Leader    string `json:"leader,omitempty"`
}

// retired is the answer to rcRetire.
type retired struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Bytes int64  `json:"bytes"`
}

// RecoverChannel re-forms channel name from its best surviving replica
// (above). confirm must be "i-understand-data-loss".
func (n *Node) RecoverChannel(ctx context.Context, name, confirm string) (api.RecoverResponse, error) {
	if confirm != recoverConfirm {
		return api.RecoverResponse{}, fmt.Errorf("%w: a recovery may make writes answered 503 outcome_unknown appear and loses any the survivor lacks: confirm with %q", ErrInvalidRequest, recoverConfirm)
	}
	if err := fsm.CheckVersion(fsm.MetaVersion(&fsm.RecoverChannel{}), n.meta.fsm.ClusterVersion()); err != nil {
		return api.RecoverResponse{}, err
	}
	if err := n.metaSync(ctx); err != nil {
		return api.RecoverResponse{}, err
	}
	ch, ok := n.meta.fsm.Channel(name)
	if !ok {
		return api.RecoverResponse{}, fmt.Errorf("%w: %q", ErrChannelNotFound, name)
	}
	// 1. Who survives.
	var infos []recoverInfo
	var lost []string
	for _, nd := range n.placedNodes(ch) {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := n.askRecoverInfo(ictx, nd, ch.GroupID)
		cancel()
		if err != nil {
			n.log.Warn("recover: a replica does not answer; counted lost", "channel", name, "node", nd.ID, "error", err)
			lost = append(lost, nd.ID)
			continue
		}
		infos = append(infos, info)
	}
	if len(infos) == 0 {
		return api.RecoverResponse{}, fmt.Errorf("%w: no replica of channel %q answers: nothing to recover from (restore a backup instead)", ErrInvalidRequest, name)
	}
	if 2*len(infos) > len(ch.Placement) {
		return api.RecoverResponse{}, fmt.Errorf("%w: %d of the %d replicas of channel %q answer: it has a quorum (or will once its nodes are back); recover only a channel that lost a majority for good", ErrInvalidRequest, len(infos), len(ch.Placement), name)
	}
	best := infos[0]
	for _, in := range infos[1:] {
		if in.LastTerm > best.LastTerm || (in.LastTerm == best.LastTerm && in.LastIndex > best.LastIndex) {
			best = in
		}
	}
	survivor, _ := n.meta.fsm.Node(best.Node)
	n.log.Warn("recovering a channel that lost a quorum", "channel", name, "group", ch.GroupID,
		"survivor", best.Node, "last_term", best.LastTerm, "last_index", best.LastIndex, "lost", lost)

	// 2. The survivor's state, its whole log applied.
	var ret retired
	var err error
	if best.Node == n.cfg.Name {
		ret, err = n.retire(ch.GroupID)
	} else {
		ret, err = n.route.retire(ctx, survivor.ClusterAddr, ch.GroupID)
	}
	if err != nil {
		return api.RecoverResponse{}, fmt.Errorf("recover channel %q: retire the replica on %s: %w", name, best.Node, err)
	}

	// 3. The new group in the meta state.
	call := recoverCall{Name: name, OldGroup: ch.GroupID, Survivor: best.Node, Lost: lost,
		Source: fsm.RestoreSource{Node: best.Node, ID: ret.ID, Index: ret.Index, Term: ret.Term, Bytes: ret.Bytes}}
	var out api.Channel
	err = n.route.do(ctx, "recover_channel", func(ctx context.Context) (err error) {
		out, err = n.recoverMeta(ctx, call)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		out, err = n.route.recoverMeta(ctx, re, call)
		return n.seeMetaWrite(ctx, err)
	})
	if err != nil {
		return api.RecoverResponse{}, fmt.Errorf("recover channel %q: the survivor on %s is retired and its state kept (%s/%s.snap); record the new group: %w",
			name, best.Node, restoresDir, ret.ID, err)
	}
	// 4. Seeded by the survivor.
	if err := n.awaitRestored(ctx, name, ret.Index); err != nil {
		return api.RecoverResponse{}, fmt.Errorf("%w: recovered channel %q does not serve yet: %v", ErrRestoreFailed, name, err)
	}
	n.log.Warn("channel recovered", "channel", name, "group", out.GroupID, "index", ret.Index)
	return api.RecoverResponse{Channel: out, Survivor: best.Node, Lost: lost, Index: ret.Index,
		OldGroupID: ch.GroupID}, nil
}

func (n *Node) askRecoverInfo(ctx context.Context, nd fsm.NodeRecord, gid uint64) (recoverInfo, error) {
	if nd.ID == n.cfg.Name {
		return n.localRecoverInfo(gid)
	}
	head, err := n.route.simple(ctx, "recover_info", nd.ClusterAddr, rcRecoverInfo, u64(gid))
	if err != nil {
		return recoverInfo{}, err
	}
	var info recoverInfo
	if err := json.Unmarshal(head, &info); err != nil {
		return recoverInfo{}, fmt.Errorf("cluster: recover info from %s: %v", nd.ID, err)
	}
	return info, nil
}

func (n *Node) localRecoverInfo(gid uint64) (recoverInfo, error) {
	rep, ok := n.shards.Replica(gid)
	if !ok {
		return recoverInfo{}, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	st := rep.Raft().Stats()
	term, _ := strconv.ParseUint(st["last_log_term"], 10, 64)
	info := recoverInfo{Node: n.cfg.Name, LastIndex: rep.Raft().LastIndex(), LastTerm: term, Applied: rep.FSM().Applied()}
	if _, id := rep.Raft().LeaderWithID(); id != "" {
		info.Leader = shard.NodeOf(id)
	}
	return info, nil
}

// recoverInfo (rcRecoverInfo): head gid u64; answer the JSON of recoverInfo.
func (r *router) serveRecoverInfo(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	gid, err := readU64(head, "recover info call")
	if err != nil {
		return nil, nil, err
	}
	info, err := r.n.localRecoverInfo(gid)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(info)
	return b, nil, err
}

// retire retires this node's replica of gid into an upload file.
func (n *Node) retire(gid uint64) (retired, error) {
	dir := filepath.Join(n.cfg.DataDir, restoresDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return retired{}, err
	}
	id := newUploadID()
	path := filepath.Join(dir, id+".snap")
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return retired{}, err
	}
	// Until the meta state has the new group, the reconciler must not
	// start the retired replica again.
	n.seeding.Store(gid, true)
	idx, term, err := n.shards.Retire(gid, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		os.Remove(path + ".tmp")
		return retired{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return retired{}, err
	}
	return retired{ID: id, Index: idx, Term: term, Bytes: st.Size()}, nil
}

// retire (rcRetire): head gid u64; answer the JSON of retired. Not
// idempotent: a second call finds no replica to retire.
func (r *router) retire(ctx context.Context, addr string, gid uint64) (retired, error) {
	ctx, cancel := context.WithTimeout(ctx, maxCallTimeout)
	defer cancel()
	ans, err := r.call(ctx, addr, rcRetire, u64(gid), nil)
	r.count("retire", err)
	if err != nil {
		return retired{}, err
	}
	if ans.body != nil {
		_ = ans.body.Close()
	}
	var out retired
	if err := json.Unmarshal(ans.head, &out); err != nil {
		return retired{}, fmt.Errorf("cluster: retire on %s: %v", addr, err)
	}
	return out, nil
}

func (r *router) serveRetire(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	gid, err := readU64(head, "retire call")
	if err != nil {
		return nil, nil, err
	}
	out, err := r.n.retire(gid)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(out)
	return b, nil, err
}

type recoverCall struct {
	Name     string            `json:"name"`
	OldGroup uint64            `json:"old_group"`
	Survivor string            `json:"survivor"`
	Lost     []string          `json:"lost"`
	Source   fsm.RestoreSource `json:"source"`
}

// recoverMeta records the recovery on the meta leader: the placement is
// the survivor first, then nodes the allocator picks among the others that
// are not lost.
func (n *Node) recoverMeta(ctx context.Context, c recoverCall) (api.Channel, error) {
	if n.meta.raft.State() != raft.Leader {
		return api.Channel{}, n.metaRedirect()
	}
	ch, ok := n.meta.fsm.Channel(c.Name)
	if !ok {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelNotFound, c.Name)
	}
	surv, ok := n.meta.fsm.Node(c.Survivor)
	if !ok {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrNodeNotFound, c.Survivor)
	}
	placement := []fsm.Replica{{NodeID: surv.ID, ServerID: surv.ServerID}}
	var others []fsm.NodeRecord
	for _, nd := range n.meta.fsm.Nodes() {
		if nd.ID != surv.ID && !slices.Contains(c.Lost, nd.ID) {
			others = append(others, nd)
		}
	}
	for want := ch.Replicas - 1; want > 0; want-- {
		more, err := place(others, n.meta.fsm.Channels(), PlaceRequest{Replicas: want, Zones: ch.Zones})
		if err == nil {
			placement = append(placement, more...)
			break
		}
	}
	src := c.Source
	src.ServerID = surv.ServerID
	res, err := n.proposeMeta(ctx, &fsm.RecoverChannel{Name: c.Name, OldGroup: c.OldGroup, Placement: placement, Restore: src})
	if err != nil {
		return api.Channel{}, err
	}
	if errors.Is(res.Err, fsm.ErrChannelNotFound) {
		return api.Channel{}, fmt.Errorf("%w: %q", ErrChannelNotFound, c.Name)
	} else if res.Err != nil {
		return api.Channel{}, fmt.Errorf("%w: %v", ErrInvalidRequest, res.Err)
	}
	now, _ := n.meta.fsm.Channel(c.Name)
	n.log.Warn("channel re-formed after losing a quorum", "channel", c.Name, "old_group", c.OldGroup,
		"group", now.GroupID, "placement", nodeIDs(now.Placement))
	return n.describe(ctx, now, false), nil
}

// recoverMeta (rcRecoverMeta): head the JSON of recoverCall; answer the
// JSON of the api.Channel.
func (r *router) recoverMeta(ctx context.Context, re *shard.RedirectError, c recoverCall) (api.Channel, error) {
	var ch api.Channel
	err := r.leaderJSON(ctx, "recover_meta", rcRecoverMeta, re, c, &ch)
	return ch, err
}

func (r *router) serveRecoverMeta(ctx context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
	return serveJSON("recover", func(ctx context.Context, c recoverCall) (any, error) {
		return r.n.recoverMeta(ctx, c)
	})(ctx, head, body)
}
