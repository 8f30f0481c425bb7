package server

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/shard"
)

// TestWatchTimeout: a blocking read that times out answers 200 with the
// current value and index, after reading again at the requested level.
func TestWatchTimeout(t *testing.T) {
	f := newFake("nft")
	_, _, base := clientFor(t, Config{Backend: f})
	c := api.NewClient(base, "", nil)
	if _, err := c.Put(t.Context(), "nft", "k", []byte("v1"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp := do(t, base, "GET", "/v1/channels/nft/kv/k?index=1&wait=100ms&consistency=stale", nil, nil)
	elapsed := time.Since(start)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "v1" || resp.Header.Get(api.HeaderIndex) != "1" {
		t.Fatalf("timed-out watch: %d %q index %q", resp.StatusCode, body, resp.Header.Get(api.HeaderIndex))
	}
	if elapsed < 100*time.Millisecond*15/16 {
		t.Errorf("returned after %v, before the wait", elapsed)
	}
	if f.waits.Load() != 1 || f.reads.Load() != 2 {
		t.Errorf("waits %d reads %d, want 1 wait and a read on each side of it", f.waits.Load(), f.reads.Load())
	}
	if shard.ReadLevel(f.lastLevel.Load()) != shard.Stale {
		t.Errorf("the read after the wait was not at the requested level")
	}
}

func TestWatchWakes(t *testing.T) {
	f := newFake("nft")
	c, s, _ := clientFor(t, Config{Backend: f})
	ctx := t.Context()
	if _, err := c.Put(ctx, "nft", "k", []byte("v1"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		v   []byte
		idx uint64
		err error
	}
	got := make(chan answer, 1)
	go func() {
		v, idx, err := c.Get(ctx, "nft", "k", api.GetOptions{WaitIndex: 1, Wait: 20 * time.Second})
		got <- answer{v, idx, err}
	}()
	waitFor(t, "the watch to block", func() bool { return s.watchers.Load() == 1 })
	// A write to another key does not wake it with a stale answer.
	if _, err := c.Put(ctx, "nft", "other", []byte("x"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "nft", "k", []byte("v2"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.err != nil || string(a.v) != "v2" || a.idx != 3 {
			t.Fatalf("woken watch: %q %d %v; want v2 at 3", a.v, a.idx, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not wake")
	}
	waitFor(t, "the watcher count to drop", func() bool { return s.watchers.Load() == 0 })

	// Already changed since the index: answers at once without waiting.
	waits := f.waits.Load()
	if v, idx, err := c.Get(ctx, "nft", "k", api.GetOptions{WaitIndex: 2, Wait: time.Minute}); err != nil || string(v) != "v2" || idx != 3 {
		t.Fatalf("watch of an index already passed: %q %d %v", v, idx, err)
	}
	// A missing key in a channel that moved past the index: at once, 404.
	if _, _, err := c.Get(ctx, "nft", "gone", api.GetOptions{WaitIndex: 1, Wait: time.Minute}); !api.IsNotFound(err) {
		t.Fatalf("watch of a missing key: %v", err)
	}
	if f.waits.Load() != waits {
		t.Errorf("answered-at-once watches waited")
	}
	// A deletion wakes a watcher of the key.
	go func() {
		v, idx, err := c.Get(ctx, "nft", "k", api.GetOptions{WaitIndex: 3, Wait: 20 * time.Second})
		got <- answer{v, idx, err}
	}()
	waitFor(t, "the second watch to block", func() bool { return s.watchers.Load() == 1 })
	if _, err := c.Delete(ctx, "nft", "k", api.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if e := api.AsError(a.err); e == nil || e.Code != api.CodeKeyNotFound || e.Index != 4 {
			t.Fatalf("watch woken by a delete: %v, want key_not_found at index 4", a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delete did not wake the watch")
	}
}

// TestWatcherBound: beyond MaxWatchers, a blocking read is refused with 429
// and Retry-After; the count goes back down as watches end.
func TestWatcherBound(t *testing.T) {
	f := newFake("nft")
	c, s, _ := clientFor(t, Config{Backend: f, MaxWatchers: 2})
	if _, err := c.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, _, err := c.Get(ctx, "nft", "k", api.GetOptions{WaitIndex: 1, Wait: time.Minute})
			done <- err
		}()
	}
	waitFor(t, "two watches to block", func() bool { return s.watchers.Load() == 2 })
	_, _, err := c.Get(t.Context(), "nft", "k", api.GetOptions{WaitIndex: 1, Wait: time.Minute})
	if e := api.AsError(err); e == nil || e.Status != 429 || e.Code != api.CodeTooManyWatchers || e.RetryAfter == 0 {
		t.Fatalf("third watch: %v, want 429 too_many_watchers with Retry-After", err)
	}
	// A plain read is not a watcher and still works.
	if _, _, err := c.Get(t.Context(), "nft", "k", api.GetOptions{}); err != nil {
		t.Fatalf("plain read at the bound: %v", err)
	}
	cancel()
	for i := 0; i < 2; i++ {
		<-done
	}
	waitFor(t, "the watchers to leave", func() bool { return s.watchers.Load() == 0 })
	if got := metricValue(s.reg, "shardnet_http_watchers", nil); got != 0 {
		t.Errorf("watchers gauge %v after the watches ended", got)
	}
}

// TestShutdownEndsWatches: Shutdown answers blocking reads with the current
// value instead of holding the node up for the rest of their wait.
func TestShutdownEndsWatches(t *testing.T) {
	f := newFake("nft")
	s := New(Config{Backend: f})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c := api.NewClient(l.Addr().String(), "", nil)
	if _, err := c.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, _, err := c.Get(t.Context(), "nft", "k", api.GetOptions{WaitIndex: 1, Wait: 5 * time.Minute})
		got <- err
	}()
	waitFor(t, "the watch to block", func() bool { return s.watchers.Load() == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the watch ended by shutdown answered %v, want the current value", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// After Shutdown, a new Serve returns at once.
	if err := s.Serve(l); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}
