package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shardnet/shardnet/chunk"
)

// The chunk collector (issue "Files in channels", item 7; the rule and the
// store's part: chunk/DESIGN.md "Pins and garbage collection"). Every node
// deletes, every ChunkGCInterval, the chunks of its store that no manifest
// of any of its channel replicas references, that are older than
// ChunkGCGrace and that no pin holds. A round:
//
//  1. mark := store.Mark();
//  2. for every replica on the node, a linearizable read index from its
//     group's leader, taken after the mark, and a wait until the replica
//     has applied it; a replica that cannot get one (behind, cut off from
//     its leader, no leader) ends the round with nothing collected, and so
//     does a replica the meta state places here that is not open;
//  3. the chunk ids the replicas' manifests reference, at those indexes;
//  4. store.Collect(id, mark) for every other stored chunk older than the
//     grace period, at collectPerSecond at most.
//
// Whoever relies on a chunk past its Put holds a pin: the uploading node
// from before it puts or sends a chunk until the upload ends (files.go), a
// download while it streams, anti-entropy while it checks; a replica
// receiving an upload's chunks holds a lease (chunkLeases) on each.

const (
	// DefaultChunkGCInterval is Config.ChunkGCInterval's default.
	DefaultChunkGCInterval = 10 * time.Minute
	// DefaultChunkGCGrace is Config.ChunkGCGrace's default.
	DefaultChunkGCGrace = time.Hour
	// collectPerSecond bounds the chunks a round deletes per second, so
	// that deleting a large file's chunks does not flood the disk.
	collectPerSecond = 200
	// collectReadTimeout bounds the read index and the wait for it, per
	// replica.
	collectReadTimeout = 10 * time.Second
	// maxLease bounds a lease however long its upload keeps sending.
	maxLease = 24 * time.Hour
)

// ErrCollectSkipped: a collection round found a replica whose state it
// could not bring up to a read index, and collected nothing.
var ErrCollectSkipped = errors.New("cluster: chunk collection skipped")

// CollectStats is what one collection round found and did.
type CollectStats struct {
	Stored     int   // chunks in the store
	Referenced int   // of those, referenced by a manifest here
	Young      int   // unreferenced, within the grace period
	Pinned     int   // unreferenced, held by a pin or released after the mark
	Held       int   // unreferenced, not examined: a backup holds collection
	Collected  int   // deleted
	Bytes      int64 // bytes deleted
}

// runCollector runs collection rounds until the node stops.
func (n *Node) runCollector() {
	defer n.wg.Done()
	if n.cfg.ChunkGCInterval < 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.stop
		cancel()
	}()
	// Leases expire between rounds too: with a long interval they would
	// otherwise hold memory for as long.
	sweep := time.NewTicker(min(n.cfg.ChunkGCInterval, time.Minute))
	defer sweep.Stop()
	round := time.NewTimer(n.cfg.ChunkGCInterval)
	defer round.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-sweep.C:
			n.leases.expire(time.Now(), n.cfg.ChunkGCGrace)
			n.uploads.expire(time.Now())
			continue
		case <-round.C:
		}
		st, err := n.CollectChunks(ctx)
		switch {
		case errors.Is(err, ErrCollectSkipped):
			n.log.Debug("chunk collection skipped", "error", err)
		case err != nil && ctx.Err() == nil:
			n.log.Warn("chunk collection failed", "error", err)
		case st.Collected > 0:
			n.log.Info("chunks collected", "collected", st.Collected, "bytes", st.Bytes, "stored", st.Stored,
				"young", st.Young, "pinned", st.Pinned, "held", st.Held)
		}
		round.Reset(n.cfg.ChunkGCInterval)
	}
}

// CollectChunks runs one collection round with the node's grace period.
// Rounds run one at a time: the store honours only its latest two marks.
func (n *Node) CollectChunks(ctx context.Context) (CollectStats, error) {
	n.collecting.Lock()
	defer n.collecting.Unlock()
	var st CollectStats
	n.leases.expire(time.Now(), n.cfg.ChunkGCGrace)
	n.uploads.expire(time.Now())
	epoch := n.holds.begin() // before the mark (backupholds.go)
	mark := n.chunks.Mark()
	refs, err := n.referencedChunks(ctx)
	if err != nil {
		return st, err
	}
	cutoff := time.Now().Add(-n.cfg.ChunkGCGrace)
	var candidates []chunk.ID
	err = n.chunks.Walk(func(id chunk.ID, _ int64) error {
		st.Stored++
		if refs[id] {
			st.Referenced++
			return nil
		}
		candidates = append(candidates, id)
		return ctx.Err()
	})
	if err != nil {
		return st, err
	}
	pace := time.NewTicker(time.Second / collectPerSecond)
	defer pace.Stop()
	for i, id := range candidates {
		info, err := n.chunks.Stat(id)
		if errors.Is(err, chunk.ErrNotFound) {
			continue
		}
		if err != nil {
			return st, err
		}
		if info.ModTime.After(cutoff) {
			st.Young++
			continue
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-pace.C:
		}
		// Checked last before each deletion: a backup's hold stops
		// the round (backupholds.go).
		if n.holds.blocks(epoch, time.Now()) {
			st.Held = len(candidates) - i
			return st, nil
		}
		switch err := n.chunks.Collect(id, mark); {
		case err == nil:
			st.Collected++
			st.Bytes += info.Size
		case errors.Is(err, chunk.ErrPinned):
			st.Pinned++
		case errors.Is(err, chunk.ErrNotFound):
		default:
			return st, err
		}
	}
	return st, nil
}

// referencedChunks returns the chunk ids the manifests of every replica on
// this node reference, each replica brought up to a read index taken now
// (after the caller's mark), or ErrCollectSkipped.
func (n *Node) referencedChunks(ctx context.Context) (map[chunk.ID]bool, error) {
	if err := n.metaSound(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCollectSkipped, err)
	}
	// A replica the meta state places here but that is not open (the
	// reconciler has not started it yet, at startup) may have chunks
	// here that its manifests reference.
	for _, ch := range n.meta.fsm.Channels() {
		for _, r := range ch.Placement {
			if r.NodeID != n.cfg.Name {
				continue
			}
			if _, ok := n.shards.Replica(ch.GroupID); !ok {
				return nil, fmt.Errorf("%w: the replica of channel %q is not open", ErrCollectSkipped, ch.Name)
			}
		}
	}
	refs := map[chunk.ID]bool{}
	for _, rep := range n.shards.Replicas() {
		rctx, cancel := context.WithTimeout(ctx, collectReadTimeout)
		idx, err := n.fetchReadIndex(rctx, rep)
		if err == nil {
			err = rep.WaitIndex(rctx, idx)
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: channel %q: no read index applied: %v", ErrCollectSkipped, rep.Channel, err)
		}
		after := ""
		for {
			ms, more, err := rep.FSM().Files("", after, scrubPage)
			if err != nil {
				return nil, fmt.Errorf("%w: channel %q: %v", ErrCollectSkipped, rep.Channel, err)
			}
			for _, m := range ms {
				for _, c := range m.Chunks {
					refs[chunk.ID(c)] = true
				}
			}
			if !more || len(ms) == 0 {
				break
			}
			after = ms[len(ms)-1].Path
		}
	}
	return refs, nil
}

// chunkLeases pin the chunks a replica received for uploads (put_chunk
// calls), which its manifests reference only once the upload commits. A
// receiving replica cannot tell when the sender's upload ends (it may die),
// so a chunk's pin lasts while the channel keeps receiving chunks, and
// ChunkGCGrace after the last one (at most maxLease after the chunk last
// came): an upload in progress keeps its chunks, an abandoned one releases
// them. An upload must therefore send a chunk at least once per grace
// period; a resumable one expires on its node after that long idle
// (uploads.go), so that it cannot commit chunks the replicas let go.
// Released pins are stamped by the store's pin clock, so a round whose mark
// came before the release does not collect them.
type chunkLeases struct {
	mu     sync.Mutex
	groups map[uint64]*leaseGroup
}

type leaseGroup struct {
	last time.Time // when the group last received a chunk
	held map[chunk.ID]heldLease
}

type heldLease struct {
	since   time.Time // last received
	release func()
}

// hold leases id for group gid, now; release is a pin on id taken before
// the chunk was put. A chunk already leased keeps its first pin, its
// lease renewed.
func (l *chunkLeases) hold(gid uint64, id chunk.ID, release func(), now time.Time) {
	l.mu.Lock()
	if l.groups == nil {
		l.groups = map[uint64]*leaseGroup{}
	}
	g := l.groups[gid]
	if g == nil {
		g = &leaseGroup{held: map[chunk.ID]heldLease{}}
		l.groups[gid] = g
	}
	g.last = now
	h, dup := g.held[id]
	if dup {
		// Received again (another upload of the same bytes): the lease
		// runs from now, on the first pin.
		h.since = now
		g.held[id] = h
	} else {
		g.held[id] = heldLease{since: now, release: release}
	}
	l.mu.Unlock()
	if dup {
		release()
	}
}

// expire releases the leases of groups that received nothing for grace,
// and those held maxLease.
func (l *chunkLeases) expire(now time.Time, grace time.Duration) {
	var rel []func()
	l.mu.Lock()
	for gid, g := range l.groups {
		idle := now.Sub(g.last) > grace
		for id, h := range g.held {
			if idle || now.Sub(h.since) > maxLease {
				rel = append(rel, h.release)
				delete(g.held, id)
			}
		}
		if len(g.held) == 0 {
			delete(l.groups, gid)
		}
	}
	l.mu.Unlock()
	for _, r := range rel {
		r()
	}
}

// count is the number of chunks leased (tests).
func (l *chunkLeases) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for _, g := range l.groups {
		k += len(g.held)
	}
	return k
}
