package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"
)

// Backups hold chunk collection (docs/operations.md "Backup and restore").
// A backup streams the chunks its snapshot's manifests reference after
// the snapshot itself, from the writing node's store or the channel's
// replicas; a file deleted after the snapshot was taken leaves chunks no
// manifest references any more, which a collector could delete before
// the backup reaches them. Pinning the ids cannot close that gap: they are
// known only once the snapshot is read to its end, and a round that began
// before the pins could still collect them. So, before it takes its
// snapshot, a backup holds collection on every replica of its channel (and
// renews the hold while it runs): a node with a hold, or one taken since
// its round began, collects nothing more in that round (CollectChunks).
// Collection on those nodes waits for the backup, at most holdTTL after
// its writer stopped renewing (it died), and the round after it collects
// what was left.
//
// A round that began before the hold collects only chunks no manifest
// referenced at a read index it took before the hold, which were not put
// since its mark: none of them is referenced at the backup's snapshot,
// taken after the hold with a linearizable read (a chunk referenced there
// and not at the round's read index belongs to a manifest committed after
// it, whose upload put the chunk after the mark, or leased it).

const (
	// holdTTL is how long a hold lasts unless renewed.
	holdTTL = 5 * time.Minute
	// holdRenew is how often a running backup renews its holds.
	holdRenew = time.Minute
	// holdVersion is the cluster version from which every node serves
	// hold_collection and lease_chunks (the release of fsm.Version 5).
	holdVersion = 5
)

// collectHolds are the holds on this node's collector.
type collectHolds struct {
	mu    sync.Mutex
	epoch uint64               // bumped by every hold taken or renewed
	held  map[string]time.Time // hold id → when it lapses
}

// hold takes or renews hold id until until.
func (h *collectHolds) hold(id string, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		h.held = map[string]time.Time{}
	}
	h.held[id] = until
	h.epoch++
}

// release ends hold id.
func (h *collectHolds) release(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.held, id)
}

// begin returns the epoch a collection round starts at.
func (h *collectHolds) begin() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch
}

// blocks reports whether a round that began at epoch must stop: a hold is
// in force now, or one was taken since it began.
func (h *collectHolds) blocks(epoch uint64, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, until := range h.held {
		if now.After(until) {
			delete(h.held, id)
		}
	}
	return len(h.held) > 0 || h.epoch != epoch
}

// holdCollection holds collection on every replica of channel until the
// returned release is called, renewing the holds meanwhile. A replica it
// cannot reach is logged and left: the backup reads the chunks from the
// others, and fails, as before, if none holds one.
func (n *Node) holdCollection(ctx context.Context, channel string) (release func(), err error) {
	_, targets, err := n.fileTargets(ctx, channel)
	if err != nil {
		return nil, err
	}
	id := newUploadID()
	send := func(ctx context.Context, ttl time.Duration) {
		var wg sync.WaitGroup
		for _, t := range targets {
			if t.self {
				if ttl > 0 {
					n.holds.hold(id, time.Now().Add(ttl))
				} else {
					n.holds.release(id)
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.route.holdCollection(ctx, t.addr, id, ttl); err != nil && ttl > 0 {
					n.log.Warn("a backup could not hold chunk collection on a replica of its channel", "channel", channel, "node", t.nodeID, "error", err)
				}
			}()
		}
		wg.Wait()
	}
	send(ctx, holdTTL)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(holdRenew)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-n.stop:
				return
			case <-tick.C:
				rctx, cancel := context.WithTimeout(context.Background(), internalCallLimit)
				send(rctx, holdTTL)
				cancel()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			rctx, cancel := context.WithTimeout(context.Background(), internalCallLimit)
			defer cancel()
			send(rctx, 0)
		})
	}, nil
}

// holdCollection (rcHoldCollection): head ttl seconds uvarint (0:
// release) | hold id; empty answer.
func (r *router) holdCollection(ctx context.Context, addr, id string, ttl time.Duration) error {
	if addr == "" {
		return fmt.Errorf("%w: no address", ErrUnreachable)
	}
	ctx, cancel := context.WithTimeout(ctx, internalCallLimit)
	defer cancel()
	head := appendBytes(binary.AppendUvarint(nil, uint64(ttl/time.Second)), []byte(id))
	_, err := r.simple(ctx, "hold_collection", addr, rcHoldCollection, head)
	return err
}

func (r *router) serveHoldCollection(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	d := decoder{b: head}
	ttl := time.Duration(d.uvarint()) * time.Second
	id := string(d.bytes())
	if d.err != nil || len(d.b) != 0 || id == "" || len(id) > 64 || ttl > holdTTL {
		return nil, nil, fmt.Errorf("%w: malformed hold collection call", ErrInvalidRequest)
	}
	if ttl == 0 {
		r.n.holds.release(id)
	} else {
		r.n.holds.hold(id, time.Now().Add(ttl))
	}
	return nil, nil, nil
}
