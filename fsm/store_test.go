package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

func TestList(t *testing.T) {
	_, c := newChannel1(t)
	keys := []string{"a", "a/1", "a/2", "a/3", "a0", "b", "b/1", "ü"}
	for i, k := range keys {
		applyOne(t, c, uint64(i+1), put(k, "v"+k))
	}
	tests := []struct {
		prefix, after string
		limit         int
		want          []string
		more          bool
	}{
		{"", "", 0, keys, false},
		{"", "", 3, []string{"a", "a/1", "a/2"}, true},
		{"", "", len(keys), keys, false},
		{"a/", "", 0, []string{"a/1", "a/2", "a/3"}, false},
		{"a/", "", 2, []string{"a/1", "a/2"}, true},
		{"a/", "a/2", 0, []string{"a/3"}, false},
		{"a/", "a/2", 1, []string{"a/3"}, false},
		{"a/", "a/1x", 0, []string{"a/2", "a/3"}, false},
		{"a/", "a/3", 0, nil, false},
		{"a/", "a", 0, []string{"a/1", "a/2", "a/3"}, false}, // after below the prefix
		{"a/", "b", 0, nil, false},                           // after above the prefix
		{"", "a/3", 2, []string{"a0", "b"}, true},
		{"b", "", 0, []string{"b", "b/1"}, false},
		{"c", "", 0, nil, false},
		{"ü", "", 0, []string{"ü"}, false},
		{"\xff", "", 0, nil, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q after %q limit %d", tt.prefix, tt.after, tt.limit), func(t *testing.T) {
			var after []byte
			if tt.after != "" {
				after = []byte(tt.after)
			}
			es, more, err := c.List([]byte(tt.prefix), after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range es {
				got = append(got, string(e.Key))
				if string(e.Value) != "v"+string(e.Key) || e.ModifyIndex == 0 {
					t.Fatalf("entry %+v", e)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") || more != tt.more {
				t.Fatalf("got %q more=%v, want %q more=%v", got, more, tt.want, tt.more)
			}
		})
	}
}

func TestChannelIsolation(t *testing.T) {
	s := openStore(t, t.TempDir())
	c1, c2 := openChannel(t, s, 1), openChannel(t, s, 2)
	applyOne(t, c1, 1, put("k", "one"))
	applyOne(t, c1, 2, put("only1", "x"))
	applyOne(t, c2, 1, put("k", "two"))
	if e, _ := mustGet(t, c1, "k"); string(e.Value) != "one" {
		t.Fatalf("c1 k = %q", e.Value)
	}
	if e, _ := mustGet(t, c2, "k"); string(e.Value) != "two" {
		t.Fatalf("c2 k = %q", e.Value)
	}
	if _, ok := mustGet(t, c2, "only1"); ok {
		t.Fatal("c2 sees c1's key")
	}
	if c1.Stats().Keys != 2 || c2.Stats().Keys != 1 || c2.Applied() != 1 {
		t.Fatalf("stats %+v %+v", c1.Stats(), c2.Stats())
	}

	if _, err := s.Channel(1); !errors.Is(err, ErrChannelOpen) {
		t.Fatalf("second Channel(1) = %v, want ErrChannelOpen", err)
	}
	if err := s.DeleteChannel(1); !errors.Is(err, ErrChannelOpen) {
		t.Fatalf("DeleteChannel of an open channel = %v", err)
	}
	want2 := stateHash(t, s, 2)
	c1.Close()
	if err := s.DeleteChannel(1); err != nil {
		t.Fatal(err)
	}
	if stateHash(t, s, 2) != want2 {
		t.Fatal("deleting channel 1 changed channel 2")
	}
	c1 = openChannel(t, s, 1)
	if c1.Applied() != 0 || c1.Stats().Keys != 0 {
		t.Fatalf("deleted channel reopened with %+v", c1.Stats())
	}
	if es, _, _ := c1.List(nil, nil, 0); len(es) != 0 {
		t.Fatalf("deleted channel lists %d keys", len(es))
	}
	if g := generations(t, s, 1); len(g) != 0 {
		t.Fatalf("generations of deleted channel: %v", g)
	}
}

// TestExtremeGroupIDs: gids 0 and MaxUint64 have prefixes at the edges of
// the key space.
func TestExtremeGroupIDs(t *testing.T) {
	s := openStore(t, t.TempDir())
	for _, gid := range []uint64{0, 1<<64 - 1} {
		c := openChannel(t, s, gid)
		applyOne(t, c, 1, put("a", "1"))
		if es, _, err := c.List(nil, nil, 0); err != nil || len(es) != 1 {
			t.Fatalf("gid %d: %d entries, %v", gid, len(es), err)
		}
		c.Close()
	}
	if err := s.DeleteChannel(1<<64 - 1); err != nil {
		t.Fatal(err)
	}
	c := openChannel(t, s, 0)
	if c.Stats().Keys != 1 {
		t.Fatal("deleting gid max touched gid 0")
	}
}

// TestLeftoverGenerationsRemoved: a crash during Restore leaves a partial
// generation; opening the store or the channel removes it.
func TestLeftoverGenerationsRemoved(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := openChannel(t, s, 5)
	applyOne(t, c, 1, put("a", "1"))
	want := stateHash(t, s, 5)
	c.Close()
	// As a crash mid-restore would leave them: a partial generation 2, and
	// data of a gid whose meta is gone.
	for _, k := range [][]byte{dataKey(5, 2, []byte("partial")), dataKey(5, 0, []byte("old")), dataKey(6, 1, []byte("orphan"))} {
		if err := s.db.Set(k, encodeValue(1, 1, nil), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	c = openChannel(t, s, 5)
	if g := generations(t, s, 5); len(g) != 1 || g[0] != 1 {
		t.Fatalf("generations after Channel open = %v", g)
	}
	if stateHash(t, s, 5) != want {
		t.Fatal("state changed")
	}
	c.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if g := generations(t, s, 6); len(g) != 0 {
		t.Fatalf("orphan data of gid 6 survived OpenStore: %v", g)
	}
	if stateHash(t, s, 5) != want {
		t.Fatal("state changed across reopen")
	}
}

func TestStoreFormatVersion(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.db.Set(formatKey, []byte{0, 0, 0, 99}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenStore(dir, StoreOptions{}); err == nil || !strings.Contains(err.Error(), "format version 99") {
		t.Fatalf("OpenStore of a future format = %v", err)
	}
}

func TestStoreClose(t *testing.T) {
	s, c := newChannel1(t)
	w := async(func() error { return c.WaitApplied(context.Background(), 10) })
	waitFor(t, "a waiter", func() bool { return s.Waiters() == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := result(t, w, "WaitApplied at Store.Close"); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v", err)
	}
	if _, err := s.Channel(2); !errors.Is(err, ErrClosed) {
		t.Fatalf("Channel after Close = %v", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := OpenStore(t.TempDir(), StoreOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := openChannel(t, s, 1)
	c.ApplyBatch(cmdBatch(t, 1, put("a", "1"), put("b", "2"), del("a")))
	applyOne(t, c, 4, put("c", "3"))
	c.ApplyBatch(cmdBatch(t, 1, put("a", "1"))) // skipped: counts nothing
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 0 {
				t.Fatalf("%s has labels", mf.GetName())
			}
			switch {
			case m.Counter != nil:
				got[mf.GetName()] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				got[mf.GetName()] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"shardnet_fsm_applied_entries_total": 4,
		"shardnet_fsm_apply_batches_total":   2,
		"shardnet_fsm_apply_batch_seconds":   2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// A second store on the same registry (a restarted node in one process)
	// shares the collectors instead of failing.
	s2, err := OpenStore(t.TempDir(), StoreOptions{Registerer: reg})
	if err != nil {
		t.Fatalf("second store on one registry: %v", err)
	}
	s2.Close()
}

// TestConcurrentReads runs readers against a channel while it applies and
// restores; run with -race. Every value written is the decimal of its
// modify index, so a reader can check each entry it sees.
func TestConcurrentReads(t *testing.T) {
	_, src := newChannel1(t)
	for i := uint64(1); i <= 50; i++ {
		applyOne(t, src, i, put(fmt.Sprintf("k/%02d", i%20), fmt.Sprint(i)))
	}
	stream := snapshotBytes(t, src)

	s, c := newChannel1(t)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	check := func(e Entry) error {
		if string(e.Value) != fmt.Sprint(e.ModifyIndex) || e.CreateIndex > e.ModifyIndex {
			return fmt.Errorf("inconsistent entry %+v", e)
		}
		return nil
	}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				e, ok, err := c.Get([]byte("k/07"))
				if err == nil && ok {
					err = check(e)
				}
				if err == nil {
					var es []Entry
					es, _, err = c.List([]byte("k/"), nil, 0)
					for _, e := range es {
						if err == nil {
							err = check(e)
						}
					}
				}
				_ = c.Stats()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for !stop.Load() {
			if err := c.WaitApplied(ctx, c.Applied()+1); err != nil {
				errs <- err
				return
			}
		}
	}()
	idx := uint64(0)
	for i := 0; i < 400; i++ {
		idx++
		if i == 200 {
			if err := c.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
				t.Fatal(err)
			}
			idx = c.Applied() + 1
		}
		k := fmt.Sprintf("k/%02d", i%20)
		if i%7 == 3 {
			c.Apply(cmdLog(t, idx, del(k)))
		} else {
			c.Apply(cmdLog(t, idx, put(k, fmt.Sprint(idx))))
		}
	}
	stop.Store(true)
	// One more apply releases the WaitApplied loop.
	c.Apply(cmdLog(t, idx+1, put("k/00", fmt.Sprint(idx+1))))
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.Waiters() != 0 {
		t.Fatalf("Waiters = %d", s.Waiters())
	}
}
