package chaos

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// h builds an operation: client, call and return times (ret < 0: unknown
// outcome, never returns), input and output.
func h(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	if ret < 0 {
		ret = math.MaxInt64
		out.Status = StatusUnknown
	}
	return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
}

func put(k, v string) Input           { return Input{Kind: OpPut, Key: k, Value: v} }
func cas(k, v string, n uint64) Input { return Input{Kind: OpCASPut, Key: k, Value: v, CAS: n} }
func get(k string) Input              { return Input{Kind: OpGet, Key: k} }
func del(k string) Input              { return Input{Kind: OpDelete, Key: k} }
func txn(k, expect, v string) Input {
	return Input{Kind: OpTxn, Key: k, Value: v, Expect: expect, ExpectAbsent: expect == ""}
}
func txnPut(index uint64) Output {
	return Output{Status: StatusOK, Index: index, Succeeded: true, Found: true, ReadIndex: index}
}
func txnSaw(index uint64, v string, read uint64) Output {
	return Output{Status: StatusOK, Index: index, Found: v != "", Value: v, ReadIndex: read}
}

// putIf is a file upload with If-None-Match: * (expect "") or If-Match.
func putIf(k, expect, v string) Input {
	return Input{Kind: OpPutIf, Key: k, Value: v, Expect: expect, ExpectAbsent: expect == ""}
}
func delIf(k, expect string) Input { return Input{Kind: OpDelete, Key: k, Expect: expect} }
func precondition(index uint64) Output {
	return Output{Status: StatusFailed, Index: index, Precondition: true}
}
func ok(index uint64) Output     { return Output{Status: StatusOK, Index: index} }
func failed(index uint64) Output { return Output{Status: StatusFailed, Index: index} }
func unknown() Output            { return Output{Status: StatusUnknown} }
func saw(v string, index uint64) Output {
	return Output{Status: StatusOK, Found: true, Value: v, Index: index}
}
func absent() Output { return Output{Status: StatusOK} }

func checkHistory(t *testing.T, ops []porcupine.Operation, refused map[string]string) Result {
	t.Helper()
	rec := NewRecorder()
	rec.ops = ops
	if refused != nil {
		rec.refused = refused
	}
	res, err := rec.Check(10*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The model as a specification: each history is linearizable or not for
// the reason its name gives.
func TestModel(t *testing.T) {
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"read your write", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(1, 20, 30, get("k"), saw("a", 5)),
		}, true},
		{"stale read after an acknowledged write", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, put("k", "b"), ok(6)),
			h(1, 40, 50, get("k"), saw("a", 5)),
		}, false},
		{"a concurrent read may see the old or the new value", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 40, put("k", "b"), ok(6)),
			h(1, 25, 30, get("k"), saw("a", 5)),
			h(2, 26, 31, get("k"), saw("b", 6)),
		}, true},
		{"reads may not go back in time", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 60, put("k", "b"), ok(6)),
			h(1, 25, 30, get("k"), saw("b", 6)),
			h(2, 35, 40, get("k"), saw("a", 5)),
		}, false},
		{"a missing key reads absent", []porcupine.Operation{
			h(1, 0, 10, get("k"), absent()),
		}, true},
		{"an acknowledged write then absent", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(1, 20, 30, get("k"), absent()),
		}, false},
		{"an unknown write may be applied late", []porcupine.Operation{
			h(0, 0, -1, put("k", "a"), unknown()),
			h(1, 20, 30, get("k"), absent()),
			h(1, 40, 50, get("k"), saw("a", 7)),
		}, true},
		{"an unknown write may never be applied", []porcupine.Operation{
			h(0, 0, -1, put("k", "a"), unknown()),
			h(1, 20, 30, get("k"), absent()),
		}, true},
		{"an unknown write cannot be applied before it was sent", []porcupine.Operation{
			h(1, 0, 10, get("k"), saw("a", 7)),
			h(0, 20, -1, put("k", "a"), unknown()),
		}, false},
		{"cas on the index of the current value", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, cas("k", "b", 5), ok(9)),
			h(1, 40, 50, get("k"), saw("b", 9)),
		}, true},
		{"cas on an older index must fail", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, put("k", "b"), ok(6)),
			h(1, 40, 50, cas("k", "c", 5), ok(9)),
		}, false},
		{"cas mismatch on the current index is wrong", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(1, 20, 30, cas("k", "c", 5), failed(7)),
		}, false},
		{"cas mismatch on an older index", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, put("k", "b"), ok(6)),
			h(1, 40, 50, cas("k", "c", 5), failed(8)),
		}, true},
		{"cas 0 creates only", []porcupine.Operation{
			h(0, 0, 10, cas("k", "a", 0), ok(5)),
			h(1, 20, 30, cas("k", "b", 0), failed(6)),
			h(1, 40, 50, get("k"), saw("a", 5)),
		}, true},
		{"cas 0 on an existing key must fail", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(1, 20, 30, cas("k", "b", 0), ok(6)),
		}, false},
		// The current value came from a write whose outcome was unknown and
		// that nobody read: its index is unknown, and no client can hold it,
		// so a CAS on an older index must fail.
		{"cas over an unobserved unknown write fails", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, -1, put("k", "b"), unknown()),
			h(1, 30, 40, cas("k", "c", 5), failed(9)),
		}, true},
		{"cas over an unobserved unknown write may also succeed (it was not applied)", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, -1, put("k", "b"), unknown()),
			h(1, 30, 40, cas("k", "c", 5), ok(9)),
		}, true},
		{"an unknown write observed by a read gets its index", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, -1, put("k", "b"), unknown()),
			h(1, 30, 40, get("k"), saw("b", 7)),
			h(1, 50, 60, cas("k", "c", 7), ok(9)),
		}, true},
		{"delete of an existing key", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, del("k"), ok(6)),
			h(1, 40, 50, get("k"), absent()),
			h(1, 60, 70, del("k"), failed(7)),
		}, true},
		{"delete acknowledged on a missing key", []porcupine.Operation{
			h(0, 0, 10, del("k"), ok(6)),
		}, false},
		{"delete not found on an existing key", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, del("k"), failed(6)),
		}, false},
		{"writes to a key take increasing log indexes", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(8)),
			h(0, 20, 30, put("k", "b"), ok(5)),
		}, false},
		{"txn puts when the value is the expected one", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, txn("k", "a", "b"), withValue(txnPut(7), "b")),
			h(1, 40, 50, get("k"), saw("b", 7)),
		}, true},
		{"txn on an absent key", []porcupine.Operation{
			h(0, 0, 10, txn("k", "", "a"), withValue(txnPut(7), "a")),
			h(1, 20, 30, txn("k", "", "b"), txnSaw(8, "a", 7)),
		}, true},
		{"txn succeeding on a stale expectation", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, put("k", "b"), ok(6)),
			h(1, 40, 50, txn("k", "a", "c"), withValue(txnPut(7), "c")),
		}, false},
		{"txn failure get must see the current state", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, put("k", "b"), ok(6)),
			h(1, 40, 50, txn("k", "x", "c"), txnSaw(7, "a", 5)),
		}, false},
		{"txn failing although the compare holds", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(1, 20, 30, txn("k", "a", "c"), txnSaw(7, "a", 5)),
		}, false},
		{"file: create only if absent, then replace only the version seen", []porcupine.Operation{
			h(0, 0, 10, putIf("f", "", "a"), ok(5)),
			h(1, 20, 30, putIf("f", "", "b"), failed(0)),
			h(1, 40, 50, putIf("f", "a", "c"), ok(7)),
			h(0, 60, 70, putIf("f", "a", "d"), failed(0)),
			h(0, 80, 90, get("f"), saw("c", 7)),
		}, true},
		{"file: create acknowledged over an existing file", []porcupine.Operation{
			h(0, 0, 10, put("f", "a"), ok(5)),
			h(1, 20, 30, putIf("f", "", "b"), ok(6)),
		}, false},
		{"file: replace refused although the version matched", []porcupine.Operation{
			h(0, 0, 10, put("f", "a"), ok(5)),
			h(1, 20, 30, putIf("f", "a", "b"), failed(0)),
		}, false},
		{"file: a replace of unknown outcome may take effect later", []porcupine.Operation{
			h(0, 0, 10, put("f", "a"), ok(5)),
			h(1, 20, -1, putIf("f", "a", "b"), unknown()),
			h(0, 40, 50, get("f"), saw("a", 5)),
			h(0, 60, 70, get("f"), saw("b", 9)),
		}, true},
		{"file: delete only the version seen", []porcupine.Operation{
			h(0, 0, 10, put("f", "a"), ok(5)),
			h(0, 20, 30, put("f", "b"), ok(6)),
			h(1, 40, 50, delIf("f", "a"), precondition(7)),
			h(1, 60, 70, delIf("f", "b"), ok(8)),
			h(1, 80, 90, delIf("f", "b"), failed(9)),
		}, true},
		{"file: delete refused as another version while it was the one", []porcupine.Operation{
			h(0, 0, 10, put("f", "a"), ok(5)),
			h(1, 20, 30, delIf("f", "a"), precondition(6)),
		}, false},
		{"file: delete refused as another version of a missing file", []porcupine.Operation{
			h(1, 20, 30, delIf("f", "a"), precondition(6)),
		}, false},
		{"keys are independent", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(8)),
			h(0, 20, 30, put("j", "b"), ok(5)),
			h(1, 40, 50, get("j"), saw("b", 5)),
			h(1, 60, 70, get("k"), saw("a", 8)),
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := checkHistory(t, tt.ops, nil)
			if len(res.Problems) > 0 {
				t.Fatalf("problems: %v", res.Problems)
			}
			if got := res.Verdict == porcupine.Ok; got != tt.want {
				t.Fatalf("linearizable = %v (%s), want %v", got, res.Verdict, tt.want)
			}
		})
	}
}

// Inconsistencies Check reports before porcupine runs.
func TestCheckProblems(t *testing.T) {
	tests := []struct {
		name    string
		ops     []porcupine.Operation
		refused map[string]string
		want    string
	}{
		{"a value no write wrote", []porcupine.Operation{
			h(1, 0, 10, get("k"), saw("zz", 5)),
		}, nil, "which no write wrote"},
		{"a refused write's value", []porcupine.Operation{
			h(1, 0, 10, get("k"), saw("a", 5)),
		}, map[string]string{"a": "no_leader"}, "whose write was refused (no_leader)"},
		{"one value, two indexes", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(1, 20, 30, get("k"), saw("a", 6)),
		}, nil, "has modify index 5"},
		{"two values, one index", []porcupine.Operation{
			h(0, 0, 10, put("k", "a"), ok(5)),
			h(0, 20, 30, put("j", "b"), ok(5)),
		}, nil, "both have modify index 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := checkHistory(t, tt.ops, tt.refused)
			if res.OK() || !strings.Contains(strings.Join(res.Problems, "\n"), tt.want) {
				t.Fatalf("problems %q, verdict %s; want one containing %q", res.Problems, res.Verdict, tt.want)
			}
		})
	}
}

// A history that is not linearizable leaves its visualization behind.
func TestCheckWritesVisualization(t *testing.T) {
	rec := NewRecorder()
	rec.ops = []porcupine.Operation{
		h(0, 0, 10, put("k", "a"), ok(5)),
		h(0, 20, 30, put("k", "b"), ok(6)),
		h(1, 40, 50, get("k"), saw("a", 5)),
		h(2, 45, -1, put("k", "c"), unknown()), // never returns
	}
	rec.Note(15, 35, "isolate-leader core1")
	path := filepath.Join(t.TempDir(), "out", "viz.html")
	res, err := rec.Check(10*time.Second, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != porcupine.Illegal || res.Visualization != path {
		t.Fatalf("result %+v, want Illegal with a visualization at %s", res, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "isolate-leader core1") {
		t.Error("the visualization does not show the nemesis note")
	}
}

func withValue(o Output, v string) Output {
	o.Value = v
	return o
}

// TestAvailabilityFigures: the figures count what was answered and find the
// longest stretch without a successful answer, in the run and within each
// fault.
func TestAvailabilityFigures(t *testing.T) {
	rec := NewRecorder()
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	// Reads succeed at 10, 20, fail from 25 to 60, succeed at 70 and 95.
	for _, a := range []struct {
		call, ret int64
		ok        bool
	}{{5, 10, true}, {15, 20, true}, {25, 30, false}, {35, 60, false}, {65, 70, true}, {90, 95, true}} {
		rec.Attempt(false, ms(a.call), ms(a.ret), a.ok)
	}
	// One write, answered at 50; one that failed.
	rec.Attempt(true, ms(40), ms(50), true)
	rec.Attempt(true, ms(80), ms(85), false)
	rec.Note(ms(22), ms(62), "isolate-leader core1")
	rec.Note(ms(75), ms(100), "kill-follower core2")
	rep := rec.Availability(ms(100))
	if r := rep.Run; r.Reads != 6 || r.ReadsOK != 4 || r.Writes != 2 || r.WritesOK != 1 {
		t.Fatalf("counts: %+v", r)
	}
	if g, at := rep.Run.ReadGap, rep.Run.ReadGapAt; g != 50*time.Millisecond || at != 20*time.Millisecond { // 20 → 70
		t.Errorf("longest read gap %v at %v, want 50ms at 20ms", g, at)
	}
	if g := rep.Run.WriteGap; g != 50*time.Millisecond { // 0 → 50, 50 → 100
		t.Errorf("longest write gap %v, want 50ms", g)
	}
	iso := rep.ByFault["isolate-leader"]
	if iso.Reads != 2 || iso.ReadsOK != 0 || iso.ReadGap != 40*time.Millisecond || iso.Writes != 1 || iso.WritesOK != 1 {
		t.Errorf("during isolate-leader: %+v", iso)
	}
	if f := rep.ByFault["kill-follower"]; f.Reads != 1 || f.ReadsOK != 1 || f.Writes != 1 || f.WritesOK != 0 || f.WriteGap != 25*time.Millisecond {
		t.Errorf("during kill-follower: %+v", f)
	}
	if s := rep.String(); !strings.Contains(s, "during isolate-leader ×1") || !strings.Contains(s, "66.67%") {
		t.Errorf("report:\n%s", s)
	}
}
