package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// A replica leases the chunks an upload sent it in memory (collector.go:
// chunkLeases), so a replica that restarted in the middle of a resumable
// upload holds them by their age only (the grace period from when they
// were written), and one that lost a chunk no longer holds the file. So
// each request of a resumable upload, before it sends more, asks every
// replica the upload counts as a holder to lease again the chunks sent so
// far (rcLeaseChunks) and say how many it lacks: one that lacks any, or
// does not answer, is no holder of the file any more, and an upload whose
// holders are no longer a majority ends (its client starts again) rather
// than commit a manifest fewer than a majority could serve.

// maxLeaseBody bounds a lease_chunks call's body: a file's chunk ids.
const maxLeaseBody = fsm.MaxFileChunks * 32

// holderCheckWait bounds how long a holder check tries a replica whose
// lease call failed before it counts the replica out, and
// holderCheckPause is the pause between tries. A lease is idempotent, so
// the call is simply made again: a replica whose node has just restarted
// may refuse for a moment (its replica not open yet, or this node's
// transport still inside the backoff of a dial that failed while it was
// down), and losing a holder for the rest of the upload over that would
// leave the file on fewer replicas than it could have. A replica that is
// really down costs the upload these 3 s once: it is no holder after.
// (put_chunk is not tried again: a file's chunks go to the replicas a
// majority of which must hold each, and a new file pays no wait for a
// replica that is down.)
const (
	holderCheckWait  = 3 * time.Second
	holderCheckPause = 200 * time.Millisecond
)

// retryHolderCall runs call until it succeeds, fails otherwise than
// without the replica's answer or with its "not hosted" refusal, or
// holderCheckWait has passed; it returns call's last error.
func retryHolderCall(ctx context.Context, call func() error) error {
	until := time.Now().Add(holderCheckWait)
	for {
		err := call()
		var cf *callFailedError
		again := errors.As(err, &cf) || errors.Is(err, shard.ErrNotHosted)
		if !again || time.Now().Add(holderCheckPause).After(until) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(holderCheckPause):
		}
	}
}

// checkHolders renews the holders' leases on u's chunks and fails the
// holders that lack one; the caller checks u.holdersErr after it.
func (n *Node) checkHolders(ctx context.Context, u *upload) {
	if len(u.ids) == 0 || n.meta.fsm.ClusterVersion() < holdVersion {
		return
	}
	ids := make([]byte, 0, 32*len(u.ids))
	for _, id := range u.ids {
		ids = append(ids, id[:]...)
	}
	var wg sync.WaitGroup
	for _, t := range u.targets {
		if t.failed.Load() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var missing int
			var err error
			if t.self {
				missing = n.leaseChunks(u.ch.GroupID, ids, false)
			} else {
				err = retryHolderCall(ctx, func() (err error) {
					missing, err = n.route.leaseChunks(ctx, t.addr, u.ch.GroupID, ids)
					return err
				})
			}
			if err == nil && missing > 0 {
				err = fmt.Errorf("it lacks %d of the %d chunks sent so far", missing, len(u.ids))
			}
			if err != nil {
				n.failTarget(t, fmt.Errorf("holder check of %s: %w", t.nodeID, err))
			}
		}()
	}
	wg.Wait()
}

// leaseChunks leases each chunk of ids (32 bytes each) held here for
// group gid, as a received put_chunk does (only when lease, on a replica
// of another node's upload: the uploading node pins its own), and returns
// how many are not held.
func (n *Node) leaseChunks(gid uint64, ids []byte, lease bool) (missing int) {
	now := time.Now()
	for i := 0; i+32 <= len(ids); i += 32 {
		var id chunk.ID
		copy(id[:], ids[i:])
		release := n.chunks.Pin(id) // before Has: not collected in between
		if !n.chunks.Has(id) {
			release()
			missing++
			continue
		}
		if lease && n.cfg.ChunkGCInterval >= 0 {
			n.leases.hold(gid, id, release, now)
		} else {
			release()
		}
	}
	return missing
}

// leaseChunks (rcLeaseChunks): head gid u64; body the chunk ids (32
// bytes each); answer the count of those the peer lacks, uvarint.
func (r *router) leaseChunks(ctx context.Context, addr string, gid uint64, ids []byte) (int, error) {
	if addr == "" {
		return 0, fmt.Errorf("%w: no address", ErrUnreachable)
	}
	ctx, cancel := context.WithTimeout(ctx, chunkCallTimeout)
	defer cancel()
	ans, err := r.call(ctx, addr, rcLeaseChunks, u64(gid), bytes.NewReader(ids))
	r.count("lease_chunks", err)
	if err != nil {
		return 0, err
	}
	if ans.body != nil {
		_ = ans.body.Close()
	}
	d := decoder{b: ans.head}
	missing := d.uvarint()
	if d.err != nil || missing > uint64(len(ids)/32) {
		return 0, fmt.Errorf("cluster: lease chunks from %s: malformed answer", addr)
	}
	return int(missing), nil
}

func (r *router) serveLeaseChunks(_ context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) != 8 || body == nil {
		return nil, nil, fmt.Errorf("%w: malformed lease chunks call", ErrInvalidRequest)
	}
	gid := binary.BigEndian.Uint64(head)
	if _, ok := r.n.shards.Replica(gid); !ok {
		_, _ = io.Copy(io.Discard, body)
		return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	ids, err := io.ReadAll(io.LimitReader(body, maxLeaseBody+1))
	if err != nil {
		return nil, nil, err
	}
	if len(ids)%32 != 0 || len(ids) > maxLeaseBody {
		return nil, nil, fmt.Errorf("%w: malformed lease chunks call (%d bytes of ids)", ErrInvalidRequest, len(ids))
	}
	return binary.AppendUvarint(nil, uint64(r.n.leaseChunks(gid, ids, true))), nil, nil
}
