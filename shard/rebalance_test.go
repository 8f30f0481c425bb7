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

// A pass remembers since when this node leads each group in its term,
// keeps that across passes while the term stays, and forgets groups it no
// longer leads.
func TestRebalanceRemembersWhenItLed(t *testing.T) {
	b := newRebalancer(&Manager{cfg: Config{LeaderRebalance: 10 * time.Second}})
	if b.settle != rebalanceSettle {
		t.Fatalf("settle %v, want %v", b.settle, rebalanceSettle)
	}
	b.led[7] = ledSince{term: 3, at: time.Now()}
	if b.pass(time.Now()) {
		t.Fatal("a pass over no led group reported more due")
	}
	if len(b.led) != 0 {
		t.Fatalf("after a pass over no led group led = %v, want empty", b.led)
	}
	if s := newRebalancer(&Manager{cfg: Config{LeaderRebalance: 300 * time.Millisecond}}).settle; s != 300*time.Millisecond {
		t.Fatalf("settle %v with a 300 ms interval, want the interval", s)
	}
}
