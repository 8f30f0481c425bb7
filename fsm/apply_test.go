package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestCommandSemantics: each case applies setup at indexes 1..n, then cmd at
// n+1, and checks the result and the entries afterwards.
func TestCommandSemantics(t *testing.T) {
	type want struct {
		key           string
		found         bool
		value         string
		create, modif uint64
	}
	tests := []struct {
		name      string
		setup     []Command
		cmd       Command
		err       error
		succeeded bool // Txn only
		ops       []OpResult
		after     []want
		keys      uint64
	}{
		{name: "put creates", cmd: put("a", "1"),
			after: []want{{"a", true, "1", 1, 1}}, keys: 1},
		{name: "put overwrites, keeps create index", setup: []Command{put("a", "1")}, cmd: put("a", "2"),
			after: []want{{"a", true, "2", 1, 2}}, keys: 1},
		{name: "put empty value", cmd: put("a", ""),
			after: []want{{"a", true, "", 1, 1}}, keys: 1},
		{name: "cas 0 creates a missing key", cmd: putCAS("a", "1", 0),
			after: []want{{"a", true, "1", 1, 1}}, keys: 1},
		{name: "cas 0 refuses an existing key", setup: []Command{put("a", "1")}, cmd: putCAS("a", "2", 0),
			err: ErrCASMismatch, after: []want{{"a", true, "1", 1, 1}}, keys: 1},
		{name: "cas on modify index writes", setup: []Command{put("a", "1"), put("a", "2")}, cmd: putCAS("a", "3", 2),
			after: []want{{"a", true, "3", 1, 3}}, keys: 1},
		{name: "cas on create index mismatches", setup: []Command{put("a", "1"), put("a", "2")}, cmd: putCAS("a", "3", 1),
			err: ErrCASMismatch, after: []want{{"a", true, "2", 1, 2}}, keys: 1},
		{name: "cas on a missing key mismatches", cmd: putCAS("a", "1", 5),
			err: ErrCASMismatch, after: []want{{key: "a"}}},
		{name: "delete", setup: []Command{put("a", "1"), put("b", "2")}, cmd: del("a"),
			after: []want{{key: "a"}, {"b", true, "2", 2, 2}}, keys: 1},
		{name: "delete missing", setup: []Command{put("b", "2")}, cmd: del("a"),
			err: ErrKeyNotFound, after: []want{{key: "a"}}, keys: 1},
		{name: "delete cas matches", setup: []Command{put("a", "1")}, cmd: delCAS("a", 1),
			after: []want{{key: "a"}}},
		{name: "delete cas mismatches", setup: []Command{put("a", "1")}, cmd: delCAS("a", 7),
			err: ErrCASMismatch, after: []want{{"a", true, "1", 1, 1}}, keys: 1},
		{name: "delete cas 0 of an existing key mismatches", setup: []Command{put("a", "1")}, cmd: delCAS("a", 0),
			err: ErrCASMismatch, after: []want{{"a", true, "1", 1, 1}}, keys: 1},
		{name: "delete cas 0 of a missing key: not found", cmd: delCAS("a", 0),
			err: ErrKeyNotFound},
		{name: "delete cas N of a missing key mismatches", cmd: delCAS("a", 3),
			err: ErrCASMismatch},
		{name: "put after delete re-creates", setup: []Command{put("a", "1"), del("a")}, cmd: put("a", "2"),
			after: []want{{"a", true, "2", 3, 3}}, keys: 1},
		{name: "empty txn succeeds", cmd: &Txn{}, succeeded: true},
		{name: "txn value equal holds",
			setup: []Command{put("a", "1")},
			cmd: &Txn{
				Compares: []Compare{{Key: []byte("a"), Target: TargetValue, Result: Equal, Value: []byte("1")}},
				Success:  []Op{{Type: OpPut, Key: []byte("b"), Value: []byte("x")}},
				Failure:  []Op{{Type: OpPut, Key: []byte("c"), Value: []byte("y")}},
			},
			succeeded: true,
			ops:       []OpResult{{Type: OpPut, Key: []byte("b")}},
			after:     []want{{"b", true, "x", 2, 2}, {key: "c"}}, keys: 2},
		{name: "txn value compare fails: failure branch",
			setup: []Command{put("a", "1")},
			cmd: &Txn{
				Compares: []Compare{{Key: []byte("a"), Target: TargetValue, Result: Greater, Value: []byte("1")}},
				Success:  []Op{{Type: OpPut, Key: []byte("b"), Value: []byte("x")}},
				Failure:  []Op{{Type: OpPut, Key: []byte("c"), Value: []byte("y")}, {Type: OpGet, Key: []byte("a")}},
			},
			ops: []OpResult{{Type: OpPut, Key: []byte("c")},
				{Type: OpGet, Key: []byte("a"), Found: true, Entry: Entry{Key: []byte("a"), Value: []byte("1"), CreateIndex: 1, ModifyIndex: 1}}},
			after: []want{{key: "b"}, {"c", true, "y", 2, 2}}, keys: 2},
		{name: "txn missing key reads as empty value and index 0",
			cmd: &Txn{Compares: []Compare{
				{Key: []byte("a"), Target: TargetValue, Result: Equal},
				{Key: []byte("a"), Target: TargetModifyIndex, Result: Equal, Index: 0},
				{Key: []byte("a"), Target: TargetCreateIndex, Result: Less, Index: 1},
			}},
			succeeded: true},
		{name: "txn index compares hold",
			setup: []Command{put("a", "1"), put("a", "2")},
			cmd: &Txn{Compares: []Compare{
				{Key: []byte("a"), Target: TargetModifyIndex, Result: Equal, Index: 2},
				{Key: []byte("a"), Target: TargetCreateIndex, Result: Equal, Index: 1},
				{Key: []byte("a"), Target: TargetModifyIndex, Result: Greater, Index: 1},
				{Key: []byte("a"), Target: TargetCreateIndex, Result: NotEqual, Index: 2},
				{Key: []byte("a"), Target: TargetValue, Result: Less, Value: []byte("3")},
			}, Success: []Op{{Type: OpDelete, Key: []byte("a")}}},
			succeeded: true,
			ops:       []OpResult{{Type: OpDelete, Key: []byte("a"), Found: true}},
			after:     []want{{key: "a"}}},
		{name: "txn one failing compare of several fails",
			setup: []Command{put("a", "1")},
			cmd: &Txn{Compares: []Compare{
				{Key: []byte("a"), Target: TargetCreateIndex, Result: Equal, Index: 1},
				{Key: []byte("a"), Target: TargetModifyIndex, Result: Less, Index: 1},
			}, Success: []Op{{Type: OpDelete, Key: []byte("a")}}},
			after: []want{{"a", true, "1", 1, 1}}, keys: 1},
		{name: "txn gets see earlier ops of the txn",
			setup: []Command{put("a", "1")},
			cmd: &Txn{Success: []Op{
				{Type: OpPut, Key: []byte("a"), Value: []byte("2")},
				{Type: OpGet, Key: []byte("a")},
				{Type: OpPut, Key: []byte("n"), Value: []byte("new")},
				{Type: OpGet, Key: []byte("n")},
				{Type: OpDelete, Key: []byte("a")},
				{Type: OpGet, Key: []byte("a")},
				{Type: OpDelete, Key: []byte("zz")},
			}},
			succeeded: true,
			ops: []OpResult{
				{Type: OpPut, Key: []byte("a")},
				{Type: OpGet, Key: []byte("a"), Found: true, Entry: Entry{Key: []byte("a"), Value: []byte("2"), CreateIndex: 1, ModifyIndex: 2}},
				{Type: OpPut, Key: []byte("n")},
				{Type: OpGet, Key: []byte("n"), Found: true, Entry: Entry{Key: []byte("n"), Value: []byte("new"), CreateIndex: 2, ModifyIndex: 2}},
				{Type: OpDelete, Key: []byte("a"), Found: true},
				{Type: OpGet, Key: []byte("a")},
				{Type: OpDelete, Key: []byte("zz")},
			},
			after: []want{{key: "a"}, {"n", true, "new", 2, 2}}, keys: 1},
		{name: "txn compares see the state before the txn",
			setup: []Command{put("a", "1")},
			cmd: &Txn{
				Compares: []Compare{{Key: []byte("a"), Target: TargetValue, Result: Equal, Value: []byte("1")},
					{Key: []byte("a"), Target: TargetValue, Result: Equal, Value: []byte("1")}},
				Success: []Op{{Type: OpPut, Key: []byte("a"), Value: []byte("2")}},
			},
			succeeded: true,
			ops:       []OpResult{{Type: OpPut, Key: []byte("a")}},
			after:     []want{{"a", true, "2", 1, 2}}, keys: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := newChannel1(t)
			for i, cmd := range tt.setup {
				if r := applyOne(t, c, uint64(i+1), cmd); r.Err != nil {
					t.Fatalf("setup %d: %v", i, r.Err)
				}
			}
			before := c.Stats()
			idx := uint64(len(tt.setup) + 1)
			r := applyOne(t, c, idx, tt.cmd)
			if !errors.Is(r.Err, tt.err) || (tt.err == nil) != (r.Err == nil) {
				t.Fatalf("Err = %v, want %v", r.Err, tt.err)
			}
			if r.Succeeded != tt.succeeded {
				t.Fatalf("Succeeded = %v, want %v", r.Succeeded, tt.succeeded)
			}
			if !equalOps(r.Ops, tt.ops) {
				t.Fatalf("Ops:\n got %+v\nwant %+v", r.Ops, tt.ops)
			}
			for _, w := range tt.after {
				e, found := mustGet(t, c, w.key)
				if found != w.found {
					t.Fatalf("key %q found = %v, want %v", w.key, found, w.found)
				}
				if found && (string(e.Value) != w.value || e.CreateIndex != w.create || e.ModifyIndex != w.modif || string(e.Key) != w.key) {
					t.Fatalf("key %q = %+v, want value %q create %d modify %d", w.key, e, w.value, w.create, w.modif)
				}
			}
			st := c.Stats()
			if st.Applied != idx || c.Applied() != idx {
				t.Fatalf("applied = %d/%d, want %d", st.Applied, c.Applied(), idx)
			}
			if st.Keys != tt.keys {
				t.Fatalf("Stats.Keys = %d, want %d", st.Keys, tt.keys)
			}
			if tt.err != nil && (st.Keys != before.Keys || st.Bytes != before.Bytes) {
				t.Fatalf("a refused command changed the counters: %+v -> %+v", before, st)
			}
			if got, want := st.Bytes, liveBytes(t, c); got != want {
				t.Fatalf("Stats.Bytes = %d, want %d", got, want)
			}
		})
	}
}

func equalOps(a, b []OpResult) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || !bytes.Equal(x.Key, y.Key) || x.Found != y.Found ||
			!bytes.Equal(x.Entry.Key, y.Entry.Key) || !bytes.Equal(x.Entry.Value, y.Entry.Value) ||
			x.Entry.CreateIndex != y.Entry.CreateIndex || x.Entry.ModifyIndex != y.Entry.ModifyIndex {
			return false
		}
	}
	return true
}

func liveBytes(t testing.TB, c *Channel) uint64 {
	t.Helper()
	es, _, err := c.List(nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, e := range es {
		n += uint64(len(e.Key) + len(e.Value))
	}
	return n
}

// TestApplyBatchReadsThroughBatch: later commands of one ApplyBatch see the
// earlier ones; configuration entries advance the applied index with a nil
// result; indexes may skip.
func TestApplyBatchReadsThroughBatch(t *testing.T) {
	_, c := newChannel1(t)
	logs := []*raft.Log{
		cmdLog(t, 1, put("a", "1")),
		cmdLog(t, 2, &Txn{
			Compares: []Compare{{Key: []byte("a"), Target: TargetModifyIndex, Result: Equal, Index: 1}},
			Success:  []Op{{Type: OpPut, Key: []byte("b"), Value: []byte("txn")}},
		}),
		confLog(3, "n1"), // recorded for files (files.go)
		cmdLog(t, 5, putCAS("b", "cas", 2)),
		cmdLog(t, 6, del("a")),
		cmdLog(t, 7, putCAS("a", "again", 0)),
	}
	res := c.ApplyBatch(logs)
	if len(res) != len(logs) {
		t.Fatalf("%d results for %d logs", len(res), len(logs))
	}
	if res[2] != nil {
		t.Fatalf("configuration entry result = %#v, want nil", res[2])
	}
	if r := res[1].(*Result); !r.Succeeded {
		t.Fatalf("txn did not see the put of the same batch")
	}
	for _, i := range []int{0, 3, 4, 5} {
		if r := res[i].(*Result); r.Err != nil {
			t.Fatalf("result %d: %v", i, r.Err)
		}
	}
	if c.Applied() != 7 {
		t.Fatalf("Applied = %d, want 7", c.Applied())
	}
	if e, _ := mustGet(t, c, "b"); string(e.Value) != "cas" || e.CreateIndex != 2 || e.ModifyIndex != 5 {
		t.Fatalf("b = %+v", e)
	}
	if e, _ := mustGet(t, c, "a"); string(e.Value) != "again" || e.CreateIndex != 7 {
		t.Fatalf("a = %+v", e)
	}

	// A batch of only a configuration entry still moves the applied index.
	res = c.ApplyBatch([]*raft.Log{{Index: 8, Type: raft.LogConfiguration}})
	if len(res) != 1 || res[0] != nil || c.Applied() != 8 {
		t.Fatalf("config-only batch: %v, applied %d", res, c.Applied())
	}
	if res := c.ApplyBatch(nil); len(res) != 0 {
		t.Fatalf("empty batch: %v", res)
	}
}

func TestApplySkippableUnknownEntry(t *testing.T) {
	_, c := newChannel1(t)
	res := c.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{0x80 | 0x21, 1, 2, 3}}})
	if res[0] != nil {
		t.Fatalf("result = %#v, want nil", res[0])
	}
	if c.Applied() != 1 {
		t.Fatalf("Applied = %d, want 1", c.Applied())
	}
}

func TestApplyUndecodablePanics(t *testing.T) {
	_, c := newChannel1(t)
	defer func() {
		r := recover()
		msg, _ := r.(string)
		if !strings.Contains(msg, "committed log entry 1") || !strings.Contains(msg, "cannot be decoded") {
			t.Fatalf("panic = %#v, want a clear message", r)
		}
		if c.Applied() != 0 {
			t.Fatalf("Applied = %d after a panicking batch", c.Applied())
		}
	}()
	c.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{0x21}}})
	t.Fatal("no panic")
}

func TestApplyAfterClose(t *testing.T) {
	s, c := newChannel1(t)
	applyOne(t, c, 1, put("a", "1"))
	c.Close()
	r := c.Apply(cmdLog(t, 2, put("a", "2"))).(*Result)
	if !errors.Is(r.Err, ErrClosed) {
		t.Fatalf("Apply after Close: %v", r.Err)
	}
	if _, _, err := c.Get([]byte("a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	c = openChannel(t, s, 1)
	if c.Applied() != 1 {
		t.Fatalf("Applied = %d, want 1", c.Applied())
	}
	if e, _ := mustGet(t, c, "a"); string(e.Value) != "1" {
		t.Fatalf("a = %q", e.Value)
	}
}

// randomLog is a deterministic pseudo-random command sequence over a few
// keys, so that CAS, deletes and txns hit and miss.
func randomLog(t testing.TB, seed uint64, n int) []*raft.Log {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	key := func() []byte { return []byte(fmt.Sprintf("k/%02d", rng.IntN(24))) }
	var logs []*raft.Log
	index := uint64(0)
	for len(logs) < n {
		index += 1 + uint64(rng.IntN(2)) // indexes skip, as with no-ops and barriers
		var cmd Command
		switch rng.IntN(8) {
		case 0, 1:
			cmd = &Put{Key: key(), Value: []byte(fmt.Sprint(rng.Uint32()))}
		case 2:
			cmd = &Put{Key: key(), Value: []byte("cas"), HasCAS: true, CAS: uint64(rng.IntN(int(index)))}
		case 3:
			cmd = &Delete{Key: key()}
		case 4:
			cmd = &Delete{Key: key(), HasCAS: rng.IntN(2) == 0, CAS: 0}
		case 5:
			cmd = &Txn{
				Compares: []Compare{{Key: key(), Target: TargetModifyIndex, Result: Less, Index: index / 2}},
				Success:  []Op{{Type: OpPut, Key: key(), Value: []byte("s")}, {Type: OpGet, Key: key()}},
				Failure:  []Op{{Type: OpDelete, Key: key()}, {Type: OpGet, Key: key()}},
			}
		case 6:
			logs = append(logs, &raft.Log{Index: index, Term: 1, Type: raft.LogConfiguration})
			continue
		case 7:
			cmd = &Txn{
				Compares: []Compare{
					{Key: key(), Target: TargetValue, Result: NotEqual, Value: []byte("s")},
					{Key: key(), Target: TargetCreateIndex, Result: Greater, Index: index / 3},
				},
				Success: []Op{{Type: OpDelete, Key: key()}, {Type: OpPut, Key: key(), Value: []byte(fmt.Sprint(rng.Uint32()))}},
				Failure: []Op{{Type: OpPut, Key: key(), Value: []byte("f")}},
			}
		}
		logs = append(logs, cmdLog(t, index, cmd))
	}
	return logs
}

// applyInBatches feeds logs to c in batches of sizes drawn from seed.
func applyInBatches(t testing.TB, c *Channel, logs []*raft.Log, seed uint64, maxBatch int) [][]any {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out [][]any
	for len(logs) > 0 {
		n := 1 + rng.IntN(maxBatch)
		n = min(n, len(logs))
		res := c.ApplyBatch(logs[:n])
		if len(res) != n {
			t.Fatalf("%d results for %d logs", len(res), n)
		}
		out = append(out, res)
		logs = logs[n:]
	}
	return out
}

func flatten(rs [][]any) []any {
	var out []any
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

// TestDeterminism: two stores fed the same log in different batchings end
// with identical state and identical results.
func TestDeterminism(t *testing.T) {
	logs := randomLog(t, 7, 1500)
	_, a := newChannel1(t)
	sb, b := newChannel1(t)
	ra := flatten(applyInBatches(t, a, logs, 1, 1))
	rb := flatten(applyInBatches(t, b, logs, 2, 64))
	sa := a.s
	if ha, hb := stateHash(t, sa, 1), stateHash(t, sb, 1); ha != hb {
		t.Fatalf("state differs: %s vs %s", ha, hb)
	}
	if a.Stats() != b.Stats() {
		t.Fatalf("stats differ: %+v vs %+v", a.Stats(), b.Stats())
	}
	if len(ra) != len(rb) {
		t.Fatal("result counts differ")
	}
	for i := range ra {
		if fmt.Sprintf("%+v", ra[i]) != fmt.Sprintf("%+v", rb[i]) {
			t.Fatalf("result %d differs: %+v vs %+v", i, ra[i], rb[i])
		}
	}
	if got := liveBytes(t, a); a.Stats().Bytes != got {
		t.Fatalf("Stats.Bytes = %d, recount %d", a.Stats().Bytes, got)
	}
	if a.Stats().Keys == 0 {
		t.Fatal("the random log left no keys; the test checks little")
	}
}

// TestRestartSkipsAppliedEntries: the applied index and the data survive a
// close and reopen, and entries at or below it are skipped on replay.
func TestRestartSkipsAppliedEntries(t *testing.T) {
	dir := t.TempDir()
	logs := randomLog(t, 11, 300)
	s := openStore(t, dir)
	c := openChannel(t, s, 9)
	applyInBatches(t, c, logs[:200], 3, 16)
	want := stateHash(t, s, 9)
	applied := c.Applied()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	c = openChannel(t, s, 9)
	if c.Applied() != applied {
		t.Fatalf("Applied after reopen = %d, want %d", c.Applied(), applied)
	}
	if got := stateHash(t, s, 9); got != want {
		t.Fatal("state changed across reopen")
	}
	// Raft replays everything after its last snapshot: the first 200 again.
	for _, r := range c.ApplyBatch(logs[:200]) {
		if r != nil {
			t.Fatalf("replayed entry gave result %#v, want nil", r)
		}
	}
	if got := stateHash(t, s, 9); got != want {
		t.Fatal("replaying applied entries changed the state")
	}
	// A batch straddling the applied index applies only the new part.
	res := c.ApplyBatch(logs[190:210])
	for i, r := range res {
		if logs[190+i].Index <= applied && r != nil {
			t.Fatalf("entry %d (already applied) gave %#v", logs[190+i].Index, r)
		}
		if logs[190+i].Index > applied && logs[190+i].Type == raft.LogCommand && r == nil {
			t.Fatalf("entry %d (new) gave nil", logs[190+i].Index)
		}
	}
	applyInBatches(t, c, logs[210:], 4, 16)

	_, ref := newChannel1(t)
	applyInBatches(t, ref, logs, 5, 8)
	if stateHash(t, s, 9) != stateHash(t, ref.s, 1) {
		t.Fatal("restarted replica differs from one that never restarted")
	}
}
