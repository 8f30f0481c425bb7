package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

func TestResultEncodingRoundTrips(t *testing.T) {
	cases := []*fsm.Result{
		{Index: 7},
		{Index: 1 << 40, Err: fsm.ErrCASMismatch},
		{Index: 9, Err: fsm.ErrKeyNotFound},
		{Index: 3, Err: fsm.ErrClosed},
		{Index: 12, Succeeded: true, Ops: []fsm.OpResult{
			{Type: fsm.OpPut, Key: []byte("a")},
			{Type: fsm.OpGet, Key: []byte("b"), Found: true, Entry: fsm.Entry{Key: []byte("b"), Value: []byte("value"), CreateIndex: 2, ModifyIndex: 11}},
			{Type: fsm.OpGet, Key: []byte("c")},
			{Type: fsm.OpDelete, Key: []byte("d"), Found: true},
		}},
	}
	for i, want := range cases {
		got, err := decodeResult(encodeResult(want))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: got %+v, want %+v", i, got, want)
		}
	}
	b := encodeResult(cases[4])
	for n := range len(b) {
		if _, err := decodeResult(b[:n]); err == nil {
			t.Fatalf("a result cut to %d of %d bytes decoded", n, len(b))
		}
	}
	if _, err := decodeResult(append(b, 0)); err == nil {
		t.Fatal("a result with a trailing byte decoded")
	}
}

func TestCallErrorsKeepTheirSentinel(t *testing.T) {
	for _, ce := range callErrors {
		err := decodeCallError(encodeCallError(fmt.Errorf("group 4: %w", ce.err)))
		if !errors.Is(err, ce.err) {
			t.Fatalf("%v came back as %v", ce.err, err)
		}
		if err.Error() != "group 4: "+ce.err.Error() {
			t.Fatalf("text %q", err.Error())
		}
	}
	// A leader that moved names the new one.
	err := decodeCallError(encodeCallError(&shard.RedirectError{Err: shard.ErrNotLeader, NodeID: "n3", Addr: "127.0.0.1:7"}))
	var re *shard.RedirectError
	if !errors.As(err, &re) || re.NodeID != "n3" || re.Addr != "127.0.0.1:7" || !errors.Is(err, shard.ErrNotLeader) {
		t.Fatalf("redirect came back as %#v", err)
	}
	// Anything else keeps its text and matches no sentinel.
	err = decodeCallError(encodeCallError(errors.New("disk on fire")))
	if err.Error() != "disk on fire" || errors.Is(err, shard.ErrOutcomeUnknown) {
		t.Fatalf("unknown error came back as %v", err)
	}
	// Garbage is an unknown outcome, never a panic.
	if err := decodeCallError([]byte{codeRedirect, 200}); !errors.Is(err, shard.ErrOutcomeUnknown) {
		t.Fatalf("garbage came back as %v", err)
	}
}

func FuzzDecodeCallAnswers(f *testing.F) {
	f.Add(encodeResult(&fsm.Result{Index: 5, Succeeded: true, Ops: []fsm.OpResult{{Type: fsm.OpGet, Key: []byte("k"), Found: true}}}))
	f.Add(encodeCallError(&shard.RedirectError{Err: shard.ErrNotLeader, NodeID: "n", Addr: "a"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeResult(b); err == nil {
			if again, err := decodeResult(encodeResult(r)); err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("re-encoded result differs: %+v vs %+v (%v)", again, r, err)
			}
		}
		_ = decodeCallError(b)
	})
}
