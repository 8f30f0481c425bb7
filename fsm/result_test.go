package fsm

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/shardnet/shardnet/api"
)

func TestResultEncodingRoundTrips(t *testing.T) {
	cases := []*Result{
		{Index: 7},
		{Index: 1 << 40, Err: ErrCASMismatch},
		{Index: 9, Err: ErrKeyNotFound},
		{Index: 3, Err: ErrClosed},
		{Index: 4, Err: ErrIdempotencyKeyReused},
		{Index: 12, Succeeded: true, Ops: []OpResult{
			{Type: OpPut, Key: []byte("a")},
			{Type: OpGet, Key: []byte("b"), Found: true, Entry: Entry{Key: []byte("b"), Value: []byte("value"), CreateIndex: 2, ModifyIndex: 11}},
			{Type: OpGet, Key: []byte("c")},
			{Type: OpDelete, Key: []byte("d"), Found: true},
		}},
	}
	for i, want := range cases {
		got, err := DecodeResult(EncodeResult(nil, want))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: got %+v, want %+v", i, got, want)
		}
	}
	b := EncodeResult(nil, cases[5])
	for n := range len(b) {
		if _, err := DecodeResult(b[:n]); err == nil {
			t.Fatalf("a result cut to %d of %d bytes decoded", n, len(b))
		}
	}
	if _, err := DecodeResult(append(b, 0)); err == nil {
		t.Fatal("a result with a trailing byte decoded")
	}
	if r, err := DecodeResult([]byte{1, 9, 0, 0}); err != nil || r.Err == nil {
		t.Fatalf("an unknown result error code decoded as %+v, %v; want an error in the result", r, err)
	}
	// Code 4 is what every release sends for an error it cannot name (the
	// first ones knew four outcomes): it must never decode as a newer one.
	if r, err := DecodeResult(EncodeResult(nil, &Result{Index: 1, Err: errors.New("other")})); err != nil || !errors.Is(r.Err, errUnknownResult) {
		t.Fatalf("an unnamed error came back as %+v, %v", r, err)
	}
	if r, err := DecodeResult([]byte{1, 4, 0, 0}); err != nil || !errors.Is(r.Err, errUnknownResult) {
		t.Fatalf("code 4 of an older node decoded as %+v, %v", r, err)
	}
}

// A value read on another node must render as the same JSON as one read
// here: a local read leaves an empty value nil (JSON null in a listing),
// so the decoder must not turn it into an empty slice (""), nor the other
// way round.
func TestEntriesKeepTheirJSON(t *testing.T) {
	local := []Entry{
		{Key: []byte("empty"), CreateIndex: 1, ModifyIndex: 1},
		{Key: []byte("full"), Value: []byte("v"), CreateIndex: 2, ModifyIndex: 3},
	}
	render := func(es []Entry) string {
		out := make([]api.KV, 0, len(es))
		for _, e := range es {
			out = append(out, api.KV{Key: string(e.Key), Value: e.Value, CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex})
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	b := EncodeEntries(nil, local)
	got, rest, err := DecodeEntries(append(b, 42), 10)
	if err != nil || len(rest) != 1 || rest[0] != 42 {
		t.Fatalf("decode: %v, rest %v", err, rest)
	}
	const want = `[{"key":"empty","value":null,"create_index":1,"modify_index":1},{"key":"full","value":"dg==","create_index":2,"modify_index":3}]`
	if l, r := render(local), render(got); l != want || r != want {
		t.Fatalf("local JSON %s, remote JSON %s, want %s", l, r, want)
	}
	if _, _, err := DecodeEntries(b, 1); err == nil {
		t.Fatal("two entries decoded under a limit of one")
	}
	e, rest, err := DecodeEntry(AppendEntry(nil, local[1]))
	if err != nil || len(rest) != 0 || !reflect.DeepEqual(e, local[1]) {
		t.Fatalf("one entry: %+v, %v, rest %v", e, err, rest)
	}
}

func FuzzDecodeResult(f *testing.F) {
	f.Add(EncodeResult(nil, &Result{Index: 5, Succeeded: true, Ops: []OpResult{{Type: OpGet, Key: []byte("k"), Found: true}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResult(b)
		if err != nil || r.Err == errUnknownResult {
			return
		}
		if again, err := DecodeResult(EncodeResult(nil, r)); err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoded result differs: %+v vs %+v (%v)", again, r, err)
		}
	})
}
