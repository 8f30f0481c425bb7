package transport

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// TestFenceCheck: a fenced server id is refused with ErrFenced; other ids,
// and every id without a fence, pass.
func TestFenceCheck(t *testing.T) {
	var f fence
	if err := f.check([]byte("n2@b")); err != nil {
		t.Fatalf("no fence: %v", err)
	}
	n := &Node{}
	n.SetFence(func(id raft.ServerID) bool { return id == "n2@b" })
	if err := n.fence.check([]byte("n2@b")); !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced id: %v", err)
	}
	if err := n.fence.check([]byte("n2@c")); err != nil {
		t.Fatalf("a new incarnation: %v", err)
	}
	n.SetFence(nil)
	if err := n.fence.check([]byte("n2@b")); err != nil {
		t.Fatalf("fence removed: %v", err)
	}
}
