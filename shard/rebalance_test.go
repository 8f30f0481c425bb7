package shard

import (
	"testing"
	"time"
)

// After a pass that moved a full batch the next one comes soon, else at the
// configured interval; never later than the interval.
func TestNextRebalance(t *testing.T) {
	for _, tc := range []struct {
		full  bool
		every time.Duration
		want  time.Duration
	}{
		{false, 10 * time.Second, 10 * time.Second},
		{true, 10 * time.Second, rebalanceFollowUp},
		{true, 300 * time.Millisecond, 300 * time.Millisecond},
		{false, 300 * time.Millisecond, 300 * time.Millisecond},
	} {
		if got := nextRebalance(tc.full, tc.every); got != tc.want {
			t.Errorf("nextRebalance(%v, %v) = %v, want %v", tc.full, tc.every, got, tc.want)
		}
	}
}

// A follow-up pass keeps the terms the last regular pass saw, so that a
// group still moves only once it was led for a whole regular pass; a
// regular pass replaces them.
func TestRebalanceFollowUpKeepsWhatTheRegularPassSaw(t *testing.T) {
	b := &rebalancer{m: &Manager{}, seen: map[uint64]uint64{7: 3}, backoff: map[uint64]time.Time{}}
	if b.pass(false) {
		t.Fatal("a pass that moved nothing reported a full batch")
	}
	if b.seen[7] != 3 {
		t.Fatalf("after a follow-up pass seen = %v, want what the regular pass saw", b.seen)
	}
	b.pass(true)
	if len(b.seen) != 0 {
		t.Fatalf("after a regular pass over no led group seen = %v, want empty", b.seen)
	}
}
