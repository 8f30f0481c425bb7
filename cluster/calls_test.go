package cluster

import (
	"errors"
	"fmt"
	"testing"

	"github.com/shardnet/shardnet/shard"
)

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

func FuzzDecodeCallErrors(f *testing.F) {
	f.Add(encodeCallError(&shard.RedirectError{Err: shard.ErrNotLeader, NodeID: "n", Addr: "a"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decodeCallError(b)
	})
}
