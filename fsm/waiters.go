package fsm

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
)

// Bounds of the in-memory record of recent deletes. A WaitKey on a key that
// no longer exists needs to know whether it was deleted after the index the
// caller saw; the state keeps no tombstones, so the channel remembers the
// last deletes here. Older deletes raise deleteFloor instead: a wait on a
// missing key with an index below it returns at once (the caller re-reads
// and waits again with a newer index), which is safe, only early.
const (
	maxTrackedDeletes     = 256
	maxTrackedDeleteBytes = 32 << 10
)

// waiters holds the goroutines blocked in WaitKey and WaitApplied of one
// channel. Apply and Restore never block on them: they close channels.
type waiters struct {
	total *atomic.Int64 // the store's count of blocked waits

	mu       sync.Mutex
	closed   bool
	restores uint64 // bumped by every Restore; a WaitKey that sees it change returns
	keys     map[string]*keyWait
	byIndex  appliedHeap

	deletes     map[string]uint64 // key → index of its last delete, recent only
	deleteQ     []deleteRec       // the same deletes, oldest first
	deleteBytes int
	deleteFloor uint64 // deletes at or below this index are forgotten
}

type keyWait struct {
	ch chan struct{}
	n  int // WaitKey calls sharing ch
}

type deleteRec struct {
	key   string
	index uint64
}

type appliedWait struct {
	index uint64
	ch    chan struct{}
	pos   int // position in the heap, -1 once woken
}

type appliedHeap []*appliedWait

func (h appliedHeap) Len() int           { return len(h) }
func (h appliedHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h appliedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos = i
	h[j].pos = j
}
func (h *appliedHeap) Push(x any) {
	w := x.(*appliedWait)
	w.pos = len(*h)
	*h = append(*h, w)
}
func (h *appliedHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.pos = -1
	return w
}

func newWaiters(total *atomic.Int64, floor uint64) *waiters {
	return &waiters{
		total:       total,
		keys:        make(map[string]*keyWait),
		deletes:     make(map[string]uint64),
		deleteFloor: floor,
	}
}

// registerKey returns the channel closed at the next change of key, and the
// restore epoch it was registered in.
func (w *waiters) registerKey(key []byte) (*keyWait, uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, 0, ErrClosed
	}
	kw := w.keys[string(key)]
	if kw == nil {
		kw = &keyWait{ch: make(chan struct{})}
		w.keys[string(key)] = kw
	}
	kw.n++
	return kw, w.restores, nil
}

func (w *waiters) unregisterKey(key []byte, kw *keyWait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	kw.n--
	if kw.n == 0 && w.keys[string(key)] == kw {
		delete(w.keys, string(key))
	}
}

// deletedSince reports whether a missing key may have been deleted after
// index: known when the delete is still remembered, assumed when index is
// below what is remembered.
func (w *waiters) deletedSince(key []byte, index uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if index < w.deleteFloor {
		return true
	}
	return w.deletes[string(key)] > index
}

// wokenState reports, for a woken WaitKey, whether it should stop
// waiting and why.
func (w *waiters) wokenState(epoch uint64) (closed, restored bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed, w.restores != epoch
}

// afterApply records the changes of one committed batch and wakes the waiters
// they concern.
func (w *waiters) afterApply(applied uint64, changed [][]byte, deleted []deleteRec) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range deleted {
		w.rememberDelete(d)
	}
	if len(w.keys) > 0 {
		for _, k := range changed {
			if kw := w.keys[string(k)]; kw != nil {
				close(kw.ch)
				delete(w.keys, string(k))
			}
		}
	}
	for len(w.byIndex) > 0 && w.byIndex[0].index <= applied {
		aw := heap.Pop(&w.byIndex).(*appliedWait)
		close(aw.ch)
	}
}

func (w *waiters) rememberDelete(d deleteRec) {
	if _, ok := w.deletes[d.key]; !ok {
		w.deleteBytes += len(d.key)
	}
	w.deletes[d.key] = d.index
	w.deleteQ = append(w.deleteQ, d)
	for len(w.deleteQ) > maxTrackedDeletes || w.deleteBytes > maxTrackedDeleteBytes {
		old := w.deleteQ[0]
		w.deleteQ = w.deleteQ[1:]
		if w.deletes[old.key] == old.index {
			delete(w.deletes, old.key)
			w.deleteBytes -= len(old.key)
		}
		if old.index > w.deleteFloor {
			w.deleteFloor = old.index
		}
	}
	// Keep the queue's backing array from growing without bound.
	if cap(w.deleteQ) > 4*maxTrackedDeletes {
		w.deleteQ = append([]deleteRec(nil), w.deleteQ...)
	}
}

// reset wakes every waiter: after a Restore (applied is the restored index)
// or on Close.
func (w *waiters) reset(applied uint64, closing bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if closing {
		w.closed = true
	} else {
		w.restores++
	}
	for k, kw := range w.keys {
		close(kw.ch)
		delete(w.keys, k)
	}
	for _, aw := range w.byIndex {
		aw.pos = -1
		close(aw.ch)
	}
	w.byIndex = nil
	w.deletes = make(map[string]uint64)
	w.deleteQ = nil
	w.deleteBytes = 0
	w.deleteFloor = applied
}

// waitApplied blocks until cur() >= index, ctx is done or the channel closes.
func (w *waiters) waitApplied(ctx context.Context, index uint64, cur func() uint64) error {
	if cur() >= index {
		return nil
	}
	w.total.Add(1)
	defer w.total.Add(-1)
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return ErrClosed
		}
		// Checked under mu: Apply stores the index before taking mu to
		// wake, so a wait registered after the check cannot miss it.
		if cur() >= index {
			w.mu.Unlock()
			return nil
		}
		aw := &appliedWait{index: index, ch: make(chan struct{})}
		heap.Push(&w.byIndex, aw)
		w.mu.Unlock()

		select {
		case <-aw.ch:
			// Woken by an apply, a Restore (which may have moved the
			// index backwards) or Close: check again.
		case <-ctx.Done():
			w.mu.Lock()
			if aw.pos >= 0 {
				heap.Remove(&w.byIndex, aw.pos)
			}
			w.mu.Unlock()
			return ctx.Err()
		}
	}
}
