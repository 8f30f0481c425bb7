package cluster

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/shardnet/shardnet/chunk"
)

// TestChunkLeases: a leased chunk is pinned while its group keeps
// receiving chunks, released once the group is idle for the grace period
// (or the lease is maxLease old), and its release is stamped after an
// earlier mark, so that round's Collect refuses it.
func TestChunkLeases(t *testing.T) {
	s, err := chunk.Open(t.TempDir(), chunk.Options{MinFreeBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(b string) chunk.ID {
		id, err := s.Put(bytes.NewReader([]byte(b)))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	var l chunkLeases
	t0 := time.Unix(1000, 0)
	grace := time.Minute
	a, b, c := put("a"), put("b"), put("c")
	l.hold(1, a, s.Pin(a), t0)
	l.hold(1, a, s.Pin(a), t0.Add(10*time.Second)) // received again: one lease
	l.hold(2, c, s.Pin(c), t0)
	l.hold(1, b, s.Pin(b), t0.Add(50*time.Second))
	if l.count() != 3 {
		t.Fatalf("%d leases, want 3", l.count())
	}

	// Group 1 received b 50 s in: a stays leased with it; group 2 is idle.
	l.expire(t0.Add(90*time.Second), grace)
	if !s.Pinned(a) || !s.Pinned(b) || s.Pinned(c) {
		t.Fatalf("pinned after 90 s: a %v b %v c %v, want a and b only", s.Pinned(a), s.Pinned(b), s.Pinned(c))
	}
	mark := s.Mark()
	if err := s.Collect(a, mark); !errors.Is(err, chunk.ErrPinned) {
		t.Fatalf("collect a leased chunk: %v", err)
	}
	l.expire(t0.Add(111*time.Second), grace)
	if s.Pinned(a) || s.Pinned(b) || l.count() != 0 {
		t.Fatalf("leases left after the group went idle: %d", l.count())
	}
	// Released after the mark: that round may not collect it.
	if err := s.Collect(a, mark); !errors.Is(err, chunk.ErrPinned) {
		t.Fatalf("collect a chunk released after the mark: %v", err)
	}
	if err := s.Collect(a, s.Mark()); err != nil {
		t.Fatalf("collect with a later mark: %v", err)
	}

	// A group that never goes idle still lets a lease go after maxLease.
	d := put("d")
	l.hold(3, d, s.Pin(d), t0)
	for at := t0; !at.After(t0.Add(maxLease)); at = at.Add(time.Minute / 2) {
		l.hold(3, c, s.Pin(c), at)
		l.expire(at, grace)
	}
	l.expire(t0.Add(maxLease+time.Second), grace)
	if s.Pinned(d) || !s.Pinned(c) {
		t.Fatalf("after maxLease: d pinned %v (want false), c pinned %v (want true)", s.Pinned(d), s.Pinned(c))
	}
}
