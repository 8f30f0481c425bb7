package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Anti-entropy for files (issue "Files in channels", item 7): every node
// checks, at a bounded pace, that it holds every chunk the manifests of
// its replicas reference and that each still hashes to its id, and fetches
// a missing or corrupt one from another replica of the channel. A replica
// added by scaling or repair gets its channels' chunks from a pass run as
// soon as it has caught up with its group (healAdded), besides the rounds
// and its first read of each. Deleting chunks no manifest references is the
// collector's (collector.go).

const (
	// scrubInterval is the pause between two rounds.
	scrubInterval = 10 * time.Minute
	// scrubRate bounds the bytes a round re-hashes per second, so that a
	// node with terabytes of chunks does not saturate its disk: 1 TiB is
	// checked in about 4.5 hours.
	scrubRate = 64 << 20
	// scrubPage is how many manifests a round reads at a time.
	scrubPage = 256
)

// ScrubStats is what one anti-entropy round found and did.
type ScrubStats struct {
	Checked  int // chunks re-hashed or found missing
	Missing  int // not on this node
	Corrupt  int // on this node, not hashing to their id (removed)
	Restored int // missing or corrupt ones fetched from a peer and stored
	Failed   int // missing or corrupt ones no peer could give
}

// runScrubber runs anti-entropy rounds until the node stops.
func (n *Node) runScrubber() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.stop
		cancel()
	}()
	t := time.NewTimer(scrubInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		st, err := n.ScrubChunks(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			n.log.Warn("anti-entropy round failed", "error", err)
		case st.Missing+st.Corrupt > 0:
			n.log.Info("anti-entropy round", "checked", st.Checked, "missing", st.Missing, "corrupt", st.Corrupt,
				"restored", st.Restored, "failed", st.Failed)
		}
		t.Reset(scrubInterval)
	}
}

// addedHealWait bounds how long healAdded waits for an added replica to
// catch up with its group; past it, the periodic rounds heal it.
const addedHealWait = 10 * time.Minute

// healAdded runs an anti-entropy pass over the channel of rep, a replica
// this node started to join its group (scaling, repair), as soon as rep
// has applied a read index of its leader: the manifests it then holds are
// its channel's, and it fetches every chunk they reference from its peers,
// rather than at the next round, scrubInterval later, or on its first read
// of each.
func (n *Node) healAdded(rep *shard.Replica) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), addedHealWait)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		rctx, rcancel := context.WithTimeout(ctx, collectReadTimeout)
		idx, err := n.fetchReadIndex(rctx, rep)
		if err == nil {
			err = rep.WaitIndex(rctx, idx)
		}
		rcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || errors.Is(err, shard.ErrStopped) {
			n.log.Debug("added replica not caught up; the periodic anti-entropy will heal it", "channel", rep.Channel, "error", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	// One pass at a time: a node that takes over many replicas at once
	// (repair) must not run as many passes at scrubRate each.
	n.healing.Lock()
	defer n.healing.Unlock()
	var st ScrubStats
	err := n.scrubChannel(ctx, rep.Channel, rep.FSM(), &st)
	switch {
	case err != nil && ctx.Err() == nil && !errors.Is(err, fsm.ErrClosed):
		n.log.Warn("anti-entropy of an added replica failed", "channel", rep.Channel, "error", err)
	case err == nil:
		n.log.Info("anti-entropy of an added replica", "channel", rep.Channel, "checked", st.Checked,
			"restored", st.Restored, "failed", st.Failed)
	}
}

// ScrubChunks runs one anti-entropy round over every replica on this node,
// at scrubRate.
func (n *Node) ScrubChunks(ctx context.Context) (ScrubStats, error) {
	var st ScrubStats
	for _, rep := range n.shards.Replicas() {
		if err := n.scrubChannel(ctx, rep.Channel, rep.FSM(), &st); err != nil {
			if ctx.Err() != nil {
				return st, ctx.Err()
			}
			if !errors.Is(err, fsm.ErrClosed) {
				n.log.Warn("anti-entropy of a channel failed", "channel", rep.Channel, "error", err)
			}
		}
	}
	return st, nil
}

func (n *Node) scrubChannel(ctx context.Context, channel string, ch *fsm.Channel, st *ScrubStats) error {
	_, targets, err := n.fileTargets(ctx, channel)
	if err != nil {
		return err
	}
	var peers []string
	for _, t := range targets {
		if !t.self && t.addr != "" {
			peers = append(peers, t.addr)
		}
	}
	seen := map[chunk.ID]bool{}
	after := ""
	for {
		ms, more, err := ch.Files("", after, scrubPage)
		if err != nil {
			return err
		}
		for _, m := range ms {
			for _, c := range m.Chunks {
				id := chunk.ID(c)
				if seen[id] {
					continue
				}
				seen[id] = true
				if err := n.scrubChunk(ctx, id, m.ChunkSize, peers, st); err != nil {
					return err
				}
			}
		}
		if !more || len(ms) == 0 {
			return nil
		}
		after = ms[len(ms)-1].Path
	}
}

// scrubChunk re-hashes one chunk (pacing the round) and repairs it.
func (n *Node) scrubChunk(ctx context.Context, id chunk.ID, chunkSize uint64, peers []string, st *ScrubStats) error {
	st.Checked++
	release := n.chunks.Pin(id)
	defer release()
	start := time.Now()
	err := n.chunks.Verify(id)
	// Pace: a chunk of chunkSize bytes takes at least chunkSize/scrubRate.
	if d := time.Duration(float64(chunkSize)/scrubRate*float64(time.Second)) - time.Since(start); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, chunk.ErrNotFound):
		st.Missing++
	case errors.Is(err, chunk.ErrCorrupt):
		st.Corrupt++
	default:
		st.Failed++
		return nil
	}
	if err := n.restoreChunk(ctx, id, chunkSize, peers); err != nil {
		st.Failed++
		n.log.Warn("anti-entropy could not restore a chunk", "chunk", id.String(), "error", err)
		return nil
	}
	st.Restored++
	return nil
}

// restoreChunk fetches chunk id from the first peer that has it whole and
// stores it here.
func (n *Node) restoreChunk(ctx context.Context, id chunk.ID, chunkSize uint64, peers []string) error {
	bp := chunkBuf(int(chunkSize))
	defer freeChunkBuf(bp)
	buf := *bp
	var errs []error
	for _, addr := range peers {
		data, err := n.route.getChunk(ctx, addr, id, buf[:0:chunkSize])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return n.chunks.PutExpect(id, bytes.NewReader(data))
	}
	return fmt.Errorf("%w: chunk %s: %v", ErrChunkUnavailable, id, errors.Join(errs...))
}
