package fsm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// async runs f in a goroutine and returns a channel with its result.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func notYet(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned early: %v", what, err)
	default:
	}
}

func result(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

func TestWaitApplied(t *testing.T) {
	s, c := newChannel1(t)
	ctx := context.Background()
	if err := c.WaitApplied(ctx, 0); err != nil {
		t.Fatal(err)
	}
	w3 := async(func() error { return c.WaitApplied(ctx, 3) })
	w5 := async(func() error { return c.WaitApplied(ctx, 5) })
	waitFor(t, "two waiters", func() bool { return s.Waiters() == 2 })
	applyOne(t, c, 1, put("a", "1"))
	applyOne(t, c, 2, put("a", "2"))
	notYet(t, w3, "WaitApplied(3) at applied 2")
	c.ApplyBatch(cmdBatch(t, 3, put("b", "1"), put("b", "2"))) // 3, 4
	if err := result(t, w3, "WaitApplied(3)"); err != nil {
		t.Fatal(err)
	}
	notYet(t, w5, "WaitApplied(5) at applied 4")
	applyOne(t, c, 6, put("c", "1")) // indexes skip
	if err := result(t, w5, "WaitApplied(5)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no waiters", func() bool { return s.Waiters() == 0 })

	cctx, cancel := context.WithCancel(ctx)
	w := async(func() error { return c.WaitApplied(cctx, 100) })
	waitFor(t, "a waiter", func() bool { return s.Waiters() == 1 })
	cancel()
	if err := result(t, w, "cancelled WaitApplied"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitFor(t, "no waiters", func() bool { return s.Waiters() == 0 })
	if n := len(c.w.byIndex); n != 0 {
		t.Fatalf("%d applied waits left registered", n)
	}
}

func cmdBatch(t *testing.T, first uint64, cmds ...Command) []*raft.Log {
	var out []*raft.Log
	for i, c := range cmds {
		out = append(out, cmdLog(t, first+uint64(i), c))
	}
	return out
}

func TestWaitKey(t *testing.T) {
	s, c := newChannel1(t)
	ctx := context.Background()
	applyOne(t, c, 1, put("a", "1"))

	// Already changed after the index: returns at once.
	if err := c.WaitKey(ctx, []byte("a"), 0); err != nil {
		t.Fatal(err)
	}
	// Wakes on a write of the key, not of another key.
	w := async(func() error { return c.WaitKey(ctx, []byte("a"), 1) })
	waitFor(t, "a waiter", func() bool { return s.Waiters() == 1 })
	applyOne(t, c, 2, put("b", "1"))
	applyOne(t, c, 3, putCAS("a", "x", 99)) // refused: no change
	notYet(t, w, "WaitKey after unrelated entries")
	applyOne(t, c, 4, put("a", "2"))
	if err := result(t, w, "WaitKey"); err != nil {
		t.Fatal(err)
	}

	// A delete is a change.
	w = async(func() error { return c.WaitKey(ctx, []byte("a"), 4) })
	waitFor(t, "a waiter", func() bool { return s.Waiters() == 1 })
	applyOne(t, c, 5, del("a"))
	if err := result(t, w, "WaitKey on delete"); err != nil {
		t.Fatal(err)
	}
	// A delete that happened before the wait started is seen too.
	if err := c.WaitKey(ctx, []byte("a"), 4); err != nil {
		t.Fatal(err)
	}
	// A wait on a missing key that was not deleted after index blocks
	// until the key is created.
	w = async(func() error { return c.WaitKey(ctx, []byte("a"), 5) })
	wn := async(func() error { return c.WaitKey(ctx, []byte("never"), 5) })
	waitFor(t, "two waiters", func() bool { return s.Waiters() == 2 })
	applyOne(t, c, 6, put("other", "1"))
	notYet(t, w, "WaitKey on a deleted key")
	c.ApplyBatch(cmdBatch(t, 7, &Txn{Success: []Op{{Type: OpPut, Key: []byte("a"), Value: []byte("3")}}}))
	if err := result(t, w, "WaitKey on re-create by txn"); err != nil {
		t.Fatal(err)
	}
	notYet(t, wn, "WaitKey on a key never written")

	// Context expiry.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.WaitKey(cctx, []byte("a"), 7); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// Close fails the remaining waiter.
	c.Close()
	if err := result(t, wn, "WaitKey at Close"); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if err := c.WaitKey(ctx, []byte("a"), 100); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitKey after Close = %v", err)
	}
	if err := c.WaitApplied(ctx, 100); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitApplied after Close = %v", err)
	}
	if s.Waiters() != 0 {
		t.Fatalf("Waiters = %d after Close", s.Waiters())
	}
}

func TestWaitKeyForgottenDeletes(t *testing.T) {
	_, c := newChannel1(t)
	ctx := context.Background()
	idx := uint64(0)
	for i := 0; i < maxTrackedDeletes+10; i++ {
		k := "k" + itoa(i)
		idx++
		applyOne(t, c, idx, put(k, "v"))
		idx++
		applyOne(t, c, idx, del(k))
	}
	if len(c.w.deletes) > maxTrackedDeletes {
		t.Fatalf("%d deletes remembered", len(c.w.deletes))
	}
	// k0 was deleted at index 2, long forgotten: a wait from index 1 must
	// not block (it may only return early, never late).
	if err := c.WaitKey(ctx, []byte("k0"), 1); err != nil {
		t.Fatal(err)
	}
}

func TestWaitersWakeOnRestore(t *testing.T) {
	_, src := newChannel1(t)
	applyOne(t, src, 1, put("a", "from snapshot"))
	applyOne(t, src, 2, put("z", "1"))
	stream := snapshotBytes(t, src) // applied 2

	s, c := newChannel1(t)
	ctx := context.Background()
	for i := uint64(1); i <= 10; i++ {
		applyOne(t, c, i, put("n", "x"))
	}
	wk := async(func() error { return c.WaitKey(ctx, []byte("n"), 10) })
	wLow := async(func() error { return c.WaitApplied(ctx, 11) })
	wHigh := async(func() error { return c.WaitApplied(ctx, 2) }) // already satisfied
	if err := result(t, wHigh, "WaitApplied(2)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two waiters", func() bool { return s.Waiters() == 2 })
	if err := c.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if err := result(t, wk, "WaitKey at Restore"); err != nil {
		t.Fatal(err)
	}
	// The restore moved the index back to 2: WaitApplied(11) keeps waiting.
	notYet(t, wLow, "WaitApplied(11) after a restore to 2")
	waitFor(t, "one waiter", func() bool { return s.Waiters() == 1 })
	for i := uint64(3); i <= 11; i++ {
		applyOne(t, c, i, put("m", "y"))
	}
	if err := result(t, wLow, "WaitApplied(11)"); err != nil {
		t.Fatal(err)
	}
}
