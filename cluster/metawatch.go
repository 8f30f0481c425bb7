package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// The meta watch, the serving half (cluster/DESIGN.md "Scale of the
// control plane"): a core node streams the meta state, as its own applied
// copy holds it, to a resource node that follows it (metafollow.go)
// instead of being a member of the meta group. The call (rcMetaWatch) is
// one long-lived route call: head from u64, the last meta index the
// caller's copy applied; an empty answer head; then the answer body is a
// sequence of frames until the call's deadline, the caller's leaving or
// this node's stop:
//
//	frame:    kind u8 | length u32 | payload
//	snapshot: the meta state (fsm.Meta.State: the snapshot format), when
//	          the caller's next entry is no longer in this node's log
//	entry:    index u64 | term u64 | data: one committed command entry
//	          (the meta FSM sees commands only: no-ops, barriers and
//	          configuration entries are not sent)
//	progress: index u64: every entry up to index has been sent (sent
//	          after each batch, and every metaWatchBeat when idle, which
//	          is how the caller tells a live stream from a hung node)
//	view:     JSON watchView: the meta leader and voters as this node
//	          knows them, sent first and whenever they change (the
//	          follower asks the leader for meta read indexes and compares
//	          its meta hashes with the voters')
//
// Only entries this node's raft has handed to its state machine are sent
// (raft.AppliedIndex): they are committed. So the follower's copy is a
// prefix of the meta log, applied by the same fsm.Meta.Apply, as a
// non-voter's was.
const (
	frameSnapshot byte = 's'
	frameEntry    byte = 'e'
	frameProgress byte = 'p'
	frameView     byte = 'v'

	// metaWatchBeat is how often an idle stream says it is alive;
	// metaWatchIdle how long the follower waits for a frame before it
	// takes the core node for lost.
	metaWatchBeat = time.Second
	metaWatchIdle = 5 * metaWatchBeat
	// metaWatchBatch bounds the entries sent between two progress frames.
	metaWatchBatch = 512
	// maxWatchFrame bounds a frame the follower reads (the snapshot is the
	// big one: the whole meta state).
	maxWatchFrame = 1 << 30
)

// metaWatchVersion is the cluster version from which resource nodes follow
// the meta state by watch (fsm.Version 5): below it they are meta
// non-voters, as a node of the previous release expects.
const metaWatchVersion = 5

// watchView is what a view frame carries.
type watchView struct {
	LeaderID   string        `json:"leader_id,omitempty"`
	LeaderAddr string        `json:"leader_addr,omitempty"`
	Voters     []watchServer `json:"voters"`
}

type watchServer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// servers turns the view's voters into raft servers (metahash.go asks
// them for their hashes).
func (v *watchView) servers() []raft.Server {
	out := make([]raft.Server, len(v.Voters))
	for i, s := range v.Voters {
		out[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr)}
	}
	return out
}

// metaWatch (rcMetaWatch) opens a watch of the meta state on the core node
// at addr from index from; the caller reads the frames from the body and
// closes it.
func (r *router) metaWatch(ctx context.Context, addr string, from uint64) (io.ReadCloser, error) {
	ans, err := r.call(ctx, addr, rcMetaWatch, u64(from), nil)
	r.count("meta_watch", err)
	if err != nil {
		return nil, fmt.Errorf("cluster: watch the meta state on %s: %w", addr, err)
	}
	if ans.body == nil {
		return nil, fmt.Errorf("cluster: watch the meta state on %s: no body", addr)
	}
	return ans.body, nil
}

func (r *router) serveMetaWatch(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) != 8 {
		return nil, nil, fmt.Errorf("%w: meta watch call of %d bytes", ErrInvalidRequest, len(head))
	}
	if err := r.n.metaWatchServable(); err != nil {
		return nil, nil, err
	}
	from := binary.BigEndian.Uint64(head)
	return nil, func(w io.Writer) error { return r.n.streamMeta(ctx, from, w) }, nil
}

// metaWatchServable refuses a watch on a node that is no member of the
// meta group (it follows by watch itself: one hop only), whose copy a
// hash check found wrong, that a meta recovery fenced, or while the
// cluster runs a version whose resource nodes are meta non-voters.
func (n *Node) metaWatchServable() error {
	switch {
	case n.cfg.Role != fsm.RoleCore:
		return fmt.Errorf("%w: node %s is no core node: it serves no meta watch", ErrNotReady, n.cfg.Name)
	case n.follow.watching.Load():
		return fmt.Errorf("%w: node %s follows the meta state by watch itself", ErrNotReady, n.cfg.Name)
	case n.MetaFenced() != "":
		return fmt.Errorf("%w: %s", ErrNotReady, n.MetaFenced())
	}
	if err := n.metaSound(); err != nil {
		return err
	}
	if err := fsm.CheckVersion(metaWatchVersion, n.meta.fsm.ClusterVersion()); err != nil {
		return fmt.Errorf("cluster: meta watch: %w", err)
	}
	return nil
}

// streamMeta writes the frames of a meta watch from index from until ctx
// ends or the node stops.
func (n *Node) streamMeta(ctx context.Context, from uint64, w io.Writer) error {
	fw := frameWriter{w: w}
	flush := func() error {
		if f, ok := w.(interface{ Flush() error }); ok {
			return f.Flush()
		}
		return nil
	}
	n.metrics.metaWatchers.Inc()
	defer n.metrics.metaWatchers.Dec()
	tick := time.NewTicker(metaWatchBeat)
	defer tick.Stop()
	next := from + 1
	var lastView []byte
	for {
		changed := n.meta.fsm.Changed()
		applied := n.meta.raft.AppliedIndex()
		first, err := n.meta.logs.FirstIndex()
		if err != nil {
			return fmt.Errorf("cluster: meta log: %w", err)
		}
		if next <= applied && (first == 0 || next < first) {
			// Compacted below the follower's next entry: the state
			// instead. Entries between the state's index and the first
			// in the log are in the state (a raft snapshot covers
			// them) and are no commands (the state would have applied
			// them): the stream goes on at the later of the two.
			b, at, err := n.meta.fsm.State()
			if err != nil {
				return err
			}
			if err := fw.frame(frameSnapshot, b); err != nil {
				return err
			}
			n.metrics.metaWatchSnapshots.Inc()
			next = max(at+1, first)
		}
		compacted := false
		for sent := 0; next <= applied && sent < metaWatchBatch; next++ {
			var l raft.Log
			err := n.meta.logs.GetLog(next, &l)
			if errors.Is(err, raft.ErrLogNotFound) {
				compacted = true // meanwhile: the state next round
				break
			}
			if err != nil {
				return fmt.Errorf("cluster: meta log entry %d: %w", next, err)
			}
			if l.Type != raft.LogCommand {
				continue
			}
			b := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(l.Data)), l.Index), l.Term)
			if err := fw.frame(frameEntry, append(b, l.Data...)); err != nil {
				return err
			}
			sent++
		}
		if v := n.localWatchView(); string(v) != string(lastView) {
			if err := fw.frame(frameView, v); err != nil {
				return err
			}
			lastView = v
		}
		if err := fw.frame(frameProgress, u64(next-1)); err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
		if next <= applied || compacted {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-n.stop:
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// localWatchView is this meta member's view of the meta leader and
// voters, as a view frame carries it.
func (n *Node) localWatchView() []byte {
	addr, id := n.meta.raft.LeaderWithID()
	v := watchView{LeaderID: string(id), LeaderAddr: string(addr), Voters: []watchServer{}}
	if f := n.meta.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				v.Voters = append(v.Voters, watchServer{ID: string(s.ID), Addr: string(s.Address)})
			}
		}
	}
	b, _ := json.Marshal(&v)
	return b
}

// frameWriter writes watch frames.
type frameWriter struct{ w io.Writer }

func (f frameWriter) frame(kind byte, payload []byte) error {
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := f.w.Write(h[:]); err != nil {
		return err
	}
	_, err := f.w.Write(payload)
	return err
}

// readWatchFrame reads one frame.
func readWatchFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(h[1:])
	if size > maxWatchFrame {
		return 0, nil, fmt.Errorf("cluster: meta watch frame of %d bytes is over the limit", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, noEOF(err)
	}
	return h[0], b, nil
}
