package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// A resource node follows the meta state by watch (cluster/DESIGN.md
// "Scale of the control plane"): from cluster version 5 it is no member of
// the meta group, so the meta leader replicates to the core nodes only. It
// keeps the same local copy (n.metaFSM: the reconciler, routing and
// access checks read it with no call), fed by a meta watch on one core node
// (metawatch.go) instead of by Raft, through the same fsm.Meta Apply and
// Restore. The copy is written to meta/watch.json at most every
// followPersistEvery and when the node stops, so that a restart resumes
// from the index it holds; an older copy only means more entries to fetch.
//
// Which feed: below cluster version 5 a resource node is a meta non-voter
// as before (a node of the previous release leads the meta group or serves
// no watch). It asks a core node for a watch once its copy says version 5,
// while its copy is empty, or while its meta Raft knows no leader (it was
// removed from the meta group before it heard of version 5); a core node
// serves one only from version 5 on. The first watch a core node accepts
// switches the node over for good: from then on whatever its meta Raft
// still hands the copy is dropped (raftMetaFSM), and the meta leader
// removes it from the meta configuration (reconcileMetaMembership).
//
// Freshness is proven as before: a meta read index from the leader the
// watch names, then a wait until the watch's progress reaches it
// (waitMetaApplied).

// followPersistEvery bounds how often the followed copy is written.
const followPersistEvery = time.Second

// metaWatchCall is how long one watch call runs before it is opened again
// (on the same core node): a call has a deadline, and a stream's end that
// is expected tells nothing about the core node.
const metaWatchCall = 5 * time.Minute

// metaFollow is a resource node's state of the meta watch.
type metaFollow struct {
	// mu orders the two feeds of the copy: Raft's, until watching is
	// set, and the watch's.
	mu       sync.Mutex
	watching atomic.Bool
	// progress: every meta entry up to it is applied to the copy.
	progress atomic.Uint64
	// live: a stream is open and its last frame is recent.
	live atomic.Bool
	view atomic.Pointer[watchView]
	core atomic.Pointer[string] // the core node followed now, or last
	// drop ends the stream open now (nil: none), so that the follow
	// loop goes on with the next core node.
	drop atomic.Pointer[func()]
	path string // meta/watch.json
	// written is the applied index last written, at when (follow loop).
	written uint64
	at      time.Time
}

// raftMetaFSM is the meta FSM as the node's meta Raft group sees it: the
// node's copy, until the node follows the meta state by watch; from then
// on Raft's entries and snapshots are dropped (the watch feeds the copy,
// and a node removed from the meta group hears no more of Raft anyway).
type raftMetaFSM struct {
	f *metaFollow
	m *fsm.Meta
}

func (g *raftMetaFSM) Apply(l *raft.Log) interface{} {
	g.f.mu.Lock()
	defer g.f.mu.Unlock()
	if g.f.watching.Load() {
		return &fsm.MetaResult{Index: l.Index}
	}
	return g.m.Apply(l)
}

func (g *raftMetaFSM) Snapshot() (raft.FSMSnapshot, error) { return g.m.Snapshot() }

func (g *raftMetaFSM) Restore(rc io.ReadCloser) error {
	g.f.mu.Lock()
	defer g.f.mu.Unlock()
	if g.f.watching.Load() {
		return rc.Close()
	}
	return g.m.Restore(rc)
}

// loadFollowed restores the copy a resource node followed by watch before
// it stopped, if any (before the meta group opens: its Raft then feeds
// nothing).
func (n *Node) loadFollowed() error {
	n.follow.path = filepath.Join(n.cfg.DataDir, "meta", "watch.json")
	b, err := os.ReadFile(n.follow.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cluster: read the followed meta state: %w", err)
	}
	if err := n.metaFSM.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		return fmt.Errorf("cluster: %s: %w", n.follow.path, err)
	}
	n.follow.watching.Store(true)
	n.follow.written = n.metaFSM.Applied()
	n.follow.progress.Store(n.follow.written)
	n.log.Info("meta state follows by watch; restored the copy", "applied", n.follow.written)
	return nil
}

// persistFollowed writes the copy, when it changed since the last write
// and force or followPersistEvery passed.
func (n *Node) persistFollowed(force bool) {
	f := &n.follow
	if n.metaCorrupt.Load() != nil {
		// A hash check found the copy wrong: a restart must fetch the
		// state again, not resume from it.
		if err := os.Remove(f.path); err == nil {
			n.log.Warn("deleted the followed meta state: a hash check found it wrong", "path", f.path)
		}
		return
	}
	if !f.watching.Load() || n.metaFSM.Applied() == f.written || !force && time.Since(f.at) < followPersistEvery {
		return
	}
	b, at, err := n.metaFSM.State()
	if err == nil {
		err = writeFileAtomic(f.path, b, 0o644)
	}
	if err != nil {
		n.log.Warn("could not write the followed meta state (a restart fetches more)", "error", err)
		return
	}
	f.written, f.at = at, time.Now()
}

// runMetaFollow follows the meta state by watch (resource nodes): on one
// core node at a time, spread over the core nodes by node name, the next
// one after a failure, with a growing pause while none serves.
func (n *Node) runMetaFollow() {
	defer n.wg.Done()
	defer n.persistFollowed(true)
	h := fnv.New32a()
	_, _ = h.Write([]byte(n.cfg.Name))
	turn := int(h.Sum32() % 1024)
	pause := time.Duration(0)
	for {
		if pause > 0 {
			select {
			case <-n.stop:
				return
			case <-time.After(pause):
			}
		}
		if n.isStopping() {
			return
		}
		if !n.follow.watching.Load() && !n.wantsWatch() {
			pause = time.Second
			continue
		}
		cores := n.watchCores()
		if len(cores) == 0 {
			pause = min(max(2*pause, 100*time.Millisecond), 3*time.Second)
			continue
		}
		c := cores[turn%len(cores)]
		err := n.followCore(c)
		switch {
		case err == nil:
			pause = 0 // the call's time ran out: again, on the same node
		case n.isStopping():
			return
		default:
			n.log.Debug("meta watch ended; trying another core node", "core", c.ID, "error", err)
			turn++
			pause = min(max(2*pause, 100*time.Millisecond), 3*time.Second)
		}
	}
}

// wantsWatch says whether a resource node still fed by Raft should ask for
// a watch: its copy says the cluster runs version 5, or is empty, or its
// meta Raft knows no leader.
func (n *Node) wantsWatch() bool {
	if n.metaFSM.ClusterVersion() >= metaWatchVersion || n.metaFSM.Applied() == 0 {
		return true
	}
	_, id := n.meta.raft.LeaderWithID()
	return id == ""
}

// watchCores are the core nodes gossip says are alive and run a binary
// that serves meta watches, by id.
func (n *Node) watchCores() []nodeMeta {
	var out []nodeMeta
	for _, m := range n.gossip.snapshot() {
		if m.state == memberlist.StateAlive && m.meta.Role == fsm.RoleCore && m.meta.Version >= metaWatchVersion && m.meta.ClusterAddr != "" && m.meta.ID != n.cfg.Name {
			out = append(out, m.meta)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// followCore follows the meta state on core node c until the call's time
// runs out (nil) or the stream fails or goes silent (an error).
func (n *Node) followCore(c nodeMeta) error {
	ctx, cancel := context.WithTimeout(context.Background(), metaWatchCall)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	body, err := n.route.metaWatch(ctx, c.ClusterAddr, n.metaFSM.Applied())
	if err != nil {
		outcome := "failed"
		var cf *callFailedError
		if !errors.As(err, &cf) {
			outcome = "refused"
		}
		n.metrics.metaWatchOpened.WithLabelValues(outcome).Inc()
		return err
	}
	defer body.Close()
	n.metrics.metaWatchOpened.WithLabelValues("ok").Inc()
	if !n.follow.watching.Load() {
		n.follow.mu.Lock()
		n.follow.progress.Store(n.metaFSM.Applied())
		n.follow.watching.Store(true)
		n.follow.mu.Unlock()
		n.persistFollowed(true)
		n.log.Info("following the meta state by watch on a core node (no longer fed by the meta group's Raft)", "core", c.ID)
	}
	id := c.ID
	n.follow.core.Store(&id)
	drop := func() { _ = body.Close() }
	n.follow.drop.Store(&drop)
	defer n.follow.drop.Store(nil)
	defer n.follow.live.Store(false)
	// A core node that hangs sends nothing: its stream is closed after
	// metaWatchIdle without a frame.
	silent := time.AfterFunc(metaWatchIdle, func() { _ = body.Close() })
	defer silent.Stop()
	br := bufio.NewReaderSize(body, 64<<10)
	for {
		kind, b, err := readWatchFrame(br)
		if err != nil {
			if ctx.Err() == context.DeadlineExceeded || errors.Is(err, io.EOF) {
				return nil // the call's time ran out
			}
			return fmt.Errorf("cluster: meta watch on %s: %w", c.ID, err)
		}
		silent.Reset(metaWatchIdle)
		if err := n.applyWatchFrame(kind, b); err != nil {
			return fmt.Errorf("cluster: meta watch on %s: %w", c.ID, err)
		}
	}
}

// applyWatchFrame applies one frame of a meta watch to the copy.
func (n *Node) applyWatchFrame(kind byte, b []byte) error {
	f := &n.follow
	switch kind {
	case frameSnapshot:
		f.mu.Lock()
		err := n.metaFSM.Restore(io.NopCloser(bytes.NewReader(b)))
		f.mu.Unlock()
		if err != nil {
			return err
		}
		n.log.Info("followed meta state restored from a core node's copy", "applied", n.metaFSM.Applied())
	case frameEntry:
		if len(b) < 16 {
			return fmt.Errorf("%w: meta watch entry of %d bytes", ErrInvalidRequest, len(b))
		}
		l := &raft.Log{Index: binary.BigEndian.Uint64(b), Term: binary.BigEndian.Uint64(b[8:]), Type: raft.LogCommand, Data: b[16:]}
		f.mu.Lock()
		if l.Index > n.metaFSM.Applied() {
			n.metaFSM.Apply(l)
		}
		f.mu.Unlock()
	case frameProgress:
		if len(b) != 8 {
			return fmt.Errorf("%w: meta watch progress of %d bytes", ErrInvalidRequest, len(b))
		}
		if p := binary.BigEndian.Uint64(b); p > f.progress.Load() {
			f.progress.Store(p)
		}
		f.live.Store(true)
		n.persistFollowed(false)
	case frameView:
		var v watchView
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("%w: meta watch view: %v", ErrInvalidRequest, err)
		}
		f.view.Store(&v)
	}
	return nil
}

// switchCore drops the stream of the core node followed now: the follow
// loop goes on with the next one. A meta sync calls it when the copy did
// not reach the meta leader's read index in time: the core node it follows
// may be cut off from the meta leader, or behind it.
func (f *metaFollow) switchCore() {
	if d := f.drop.Load(); d != nil {
		(*d)()
	}
}

// metaLeader is the meta leader as this node knows it: its meta Raft's, or
// the watch's view when it follows by watch.
func (n *Node) metaLeader() (raft.ServerAddress, raft.ServerID) {
	if n.follow.watching.Load() {
		if v := n.follow.view.Load(); v != nil {
			return raft.ServerAddress(v.LeaderAddr), raft.ServerID(v.LeaderID)
		}
		return "", ""
	}
	return n.meta.raft.LeaderWithID()
}

// metaVoters are the meta group's voters as this node knows them: its meta
// Raft's configuration, or the watch's view.
func (n *Node) metaVoters() []raft.Server {
	if n.follow.watching.Load() {
		if v := n.follow.view.Load(); v != nil {
			return v.servers()
		}
		return nil
	}
	f := n.meta.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, s)
		}
	}
	return out
}

// MetaFollowing is the core node whose meta watch feeds this node's copy
// of the meta state, "" while the meta group's Raft feeds it.
func (n *Node) MetaFollowing() string {
	if !n.follow.watching.Load() {
		return ""
	}
	if c := n.follow.core.Load(); c != nil {
		return *c
	}
	return "?"
}
