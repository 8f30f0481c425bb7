package chunk

import (
	"fmt"
	"sync"
)

// Pin holds id against deletion until the returned release is called:
// Delete and Collect refuse a pinned chunk. The chunk need not be held yet
// (an upload pins each chunk before it checks Has or puts it). Pins are
// counted, so several holders may pin one id; release is idempotent. Pins
// live in memory only: a restart drops them with the uploads and downloads
// that held them.
func (s *Store) Pin(id ID) (release func()) {
	st := s.stripe(id)
	st.mu.Lock()
	st.pins[id]++
	st.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.unpin(id) }) }
}

func (s *Store) unpin(id ID) {
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pins[id]--; st.pins[id] > 0 {
		return
	}
	delete(st.pins, id)
	// Stamped under the stripe lock, so a Collect that sees the pin gone
	// also sees when it went.
	st.released[id] = s.pinSeq.Add(1)
}

// Pinned reports whether a pin holds id now.
func (s *Store) Pinned(id ID) bool {
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.pins[id] > 0
}

// Mark starts a garbage collection round: it returns the pin clock now.
// Every pin released (and every Put) after Mark has a later stamp, and
// Collect(id, mark) refuses such an id. The collector takes its read
// indexes after Mark (chunk/DESIGN.md "Pins and garbage collection"), so a
// chunk it may collect was released before those read indexes were taken.
//
// Only the latest two marks are usable: Mark forgets the releases stamped
// at or before the previous mark (they compare the same as never released
// for any mark since), which bounds the memory pins use to the releases of
// one round. One collector, taking marks in turn, never notices.
func (s *Store) Mark() uint64 {
	s.markMu.Lock()
	defer s.markMu.Unlock()
	prev := s.lastMk
	mark := s.pinSeq.Add(1)
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		for id, at := range st.released {
			if at <= prev {
				delete(st.released, id)
			}
		}
		st.mu.Unlock()
	}
	s.floor, s.lastMk = prev, mark
	return mark
}

// Collect deletes the chunk id for the garbage collector of the round that
// began with mark: only if no pin holds it and none was released (nor was it
// put) after mark. It returns ErrPinned otherwise, ErrStaleMark for a mark
// older than the previous one, and ErrNotFound for a chunk not held.
// Whether any manifest references id is the caller's to know
// (chunk/DESIGN.md "Pins and garbage collection").
func (s *Store) Collect(id ID, mark uint64) error {
	// Held shared to the end, so no Mark forgets releases this Collect
	// still compares with.
	s.markMu.RLock()
	defer s.markMu.RUnlock()
	if mark < s.floor {
		return fmt.Errorf("chunk: collect %s with mark %d (older than %d): %w", id, mark, s.floor, ErrStaleMark)
	}
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pins[id] > 0 {
		return fmt.Errorf("chunk: collect %s: %w", id, ErrPinned)
	}
	if at := st.released[id]; at > mark {
		return fmt.Errorf("chunk: collect %s: released at %d, after mark %d: %w", id, at, mark, ErrPinned)
	}
	return s.removeLocked(id, nil)
}
