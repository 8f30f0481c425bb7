package fsm

import (
	"bytes"
	"fmt"
	"testing"
)

func openStoreOpts(t testing.TB, opts StoreOptions) *Store {
	t.Helper()
	s, err := OpenStore(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestKeyIndexChangesNothing: the same log applied by a channel with a key
// index, one without, and one whose index outgrows its budget half way gives
// the same results, the same state and the same counters, across a restore
// from a snapshot and a reopen.
func TestKeyIndexChangesNothing(t *testing.T) {
	logs := randomLog(t, 21, 3000)
	// 24 keys "k/NN" cost 76 bytes each in the index: 800 bytes holds
	// about ten of them, so the small store's index is dropped early.
	stores := map[string]*Store{
		"indexed": openStoreOpts(t, StoreOptions{}),
		"off":     openStoreOpts(t, StoreOptions{KeyIndexBytes: -1}),
		"small":   openStoreOpts(t, StoreOptions{KeyIndexBytes: 800}),
	}
	names := []string{"indexed", "off", "small"}
	chans := map[string]*Channel{}
	results := map[string][]any{}
	for i, n := range names {
		chans[n] = openChannel(t, stores[n], 1)
		results[n] = flatten(applyInBatches(t, chans[n], logs[:1000], uint64(i), 16))
	}
	if chans["indexed"].index == nil || len(chans["indexed"].index.m) == 0 {
		t.Fatal("the indexed channel has no key index; the test compares nothing")
	}
	if chans["off"].index != nil || chans["small"].index != nil || !chans["small"].indexOff {
		t.Fatal("the store without a budget, or with one too small, kept an index")
	}

	// A restore replaces the indexed channel's state behind its index.
	other := openChannel(t, openStoreOpts(t, StoreOptions{KeyIndexBytes: -1}), 1)
	applyInBatches(t, other, logs[:1500], 9, 16)
	snap := snapshotBytes(t, other)
	for _, n := range names {
		if err := chans[n].Restore(readCloser(snap)); err != nil {
			t.Fatalf("%s: Restore: %v", n, err)
		}
		results[n] = append(results[n], flatten(applyInBatches(t, chans[n], logs[1500:2200], uint64(10+len(n)), 16))...)
	}
	if chans["indexed"].index == nil {
		t.Fatal("the indexed channel did not rebuild its index after the restore")
	}

	// A reopen builds the index again from the state.
	for _, n := range names {
		chans[n].Close()
		chans[n] = openChannel(t, stores[n], 1)
		results[n] = append(results[n], flatten(applyInBatches(t, chans[n], logs[2200:], uint64(20+len(n)), 16))...)
	}

	want := stateHash(t, stores["off"], 1)
	for _, n := range names {
		if got := stateHash(t, stores[n], 1); got != want {
			t.Errorf("%s: state differs from the store without an index", n)
		}
		if chans[n].Stats() != chans["off"].Stats() {
			t.Errorf("%s: stats %+v, without an index %+v", n, chans[n].Stats(), chans["off"].Stats())
		}
		if len(results[n]) != len(results["off"]) {
			t.Fatalf("%s: %d results, without an index %d", n, len(results[n]), len(results["off"]))
		}
		for i := range results[n] {
			if a, b := fmt.Sprintf("%+v", results[n][i]), fmt.Sprintf("%+v", results["off"][i]); a != b {
				t.Fatalf("%s: result %d is %s, without an index %s", n, i, a, b)
			}
		}
	}
	if got := liveBytes(t, chans["indexed"]); chans["indexed"].Stats().Bytes != got {
		t.Fatalf("Stats.Bytes = %d, recount %d", chans["indexed"].Stats().Bytes, got)
	}
	// The index holds exactly the live keys, with their entries' indexes.
	ix := chans["indexed"].index
	if ix == nil || uint64(len(ix.m)) != chans["indexed"].Stats().Keys {
		t.Fatalf("index of %v keys, channel has %d", ix, chans["indexed"].Stats().Keys)
	}
	for k, m := range ix.m {
		e, found := mustGet(t, chans["indexed"], k)
		if !found || e.CreateIndex != m.create || e.ModifyIndex != m.modify || len(e.Value) != m.size {
			t.Fatalf("index says %q is %+v, the state %+v (found %v)", k, m, e, found)
		}
	}
}

// TestKeyIndexBudget: the budget is charged for what the indexes hold and
// gets it all back when the channels close.
func TestKeyIndexBudget(t *testing.T) {
	s := openStoreOpts(t, StoreOptions{KeyIndexBytes: 1 << 20})
	a, b := openChannel(t, s, 1), openChannel(t, s, 2)
	applyOne(t, a, 1, put("alpha", "1"))
	applyOne(t, b, 1, put("be", "2"))
	applyOne(t, b, 2, put("gamma", "3"))
	applyOne(t, b, 3, del("be"))
	want := entryCost([]byte("alpha")) + entryCost([]byte("gamma"))
	if used := s.index.used; used != want {
		t.Fatalf("budget used = %d, want %d", used, want)
	}
	a.Close()
	b.Close()
	if used := s.index.used; used != 0 {
		t.Fatalf("budget used after close = %d, want 0", used)
	}
}

func readCloser(b []byte) *nopCloser { return &nopCloser{bytes.NewReader(b)} }

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
