package transport

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Faults: a blocked peer gets nothing from this node (its session is closed,
// dials fail) while it can still reach us; Unblock restores it; a delay slows
// this node's requests by at least the delay; a node without Faults is the
// default path. The same with mutual TLS, which sits above the injector.
func TestFaultsBlockAndDelay(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run("tls="+onOff(withTLS), func(t *testing.T) { testFaultsBlockAndDelay(t, withTLS) })
	}
}

func testFaultsBlockAndDelay(t *testing.T, withTLS bool) {
	fa := NewFaults()
	withFaults := func(c *Config) { c.Faults = fa }
	var a, b *testNode
	if withTLS {
		ca := newTestCA(t)
		a, b = newTLSNode(t, ca.certs(t, "a"), withFaults), newTLSNode(t, ca.certs(t, "b"))
	} else {
		a, b = newTestNode(t, "k", withFaults), newTestNode(t, "k")
	}
	// Server ids are their nodes' names, as TLS requires.
	heartbeatReq := func(term uint64) *raft.AppendEntriesRequest { return heartbeatReqFrom("a", term) }
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	serve(t, ga, echoHandler)
	serve(t, gb, echoHandler)
	var resp raft.AppendEntriesResponse
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp); err != nil {
		t.Fatalf("before any rule: %v", err)
	}

	// An app stream open on the session dies with it.
	app, err := a.DialApp(t.Context(), string(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	fa.Block(string(b.Addr()))
	_ = app.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
	if _, err := app.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on an app stream of a blocked peer: %v, want the stream closed", err)
	}
	err = ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp)
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("RPC to a blocked peer: %v, want ErrBlocked", err)
	}
	if !fa.Blocked(string(b.Addr())) {
		t.Fatal("Blocked = false after Block")
	}
	// The other direction is b's business: b still reaches a.
	if err := gb.AppendEntries("a", a.Addr(), heartbeatReqFrom("b", 1), &resp); err != nil {
		t.Fatalf("the blocked peer's own RPC: %v", err)
	}

	fa.Unblock(string(b.Addr()))
	waitFor(t, 5*time.Second, "RPCs after Unblock", func() bool {
		return ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp) == nil
	})

	const d = 600 * time.Millisecond // well above an RPC on a loaded machine (150 ms was not)
	fa.Delay(string(b.Addr()), d)
	start := time.Now()
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp); err != nil {
		t.Fatalf("delayed RPC: %v", err)
	}
	if took := time.Since(start); took < d {
		t.Fatalf("delayed RPC took %v, want at least %v", took, d)
	}
	// Bytes keep their order through the delay: a large snapshot arrives
	// whole and intact.
	var got [32]byte
	done := make(chan struct{})
	ga2, _ := a.Group(2)
	gb2, _ := b.Group(2)
	serveSnapshotSum(t, gb2, &got, done)
	const size = 3 << 20
	var sresp raft.InstallSnapshotResponse
	req := &raft.InstallSnapshotRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("a")}, Term: 1, Size: size}
	if err := ga2.InstallSnapshot("b", b.Addr(), req, &sresp, newPattern(size)); err != nil {
		t.Fatalf("snapshot through a delay: %v", err)
	}
	<-done
	if got != patternSum(size) {
		t.Fatal("snapshot bytes changed through a delay")
	}

	fa.Heal()
	start = time.Now()
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp); err != nil {
		t.Fatalf("after Heal: %v", err)
	}
	if took := time.Since(start); took >= d {
		t.Errorf("RPC after Heal took %v, want no delay", took)
	}
}

// Rules outlive a node: a Faults given to a restarted node still blocks.
func TestFaultsSurviveRestart(t *testing.T) {
	fa := NewFaults()
	b := newTestNode(t, "k")
	fa.Block(string(b.Addr()))
	a := newTestNode(t, "k", func(c *Config) { c.Faults = fa })
	ga, _ := a.Group(1)
	var resp raft.AppendEntriesResponse
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp); !errors.Is(err, ErrBlocked) {
		t.Fatalf("RPC from a node started under a rule: %v, want ErrBlocked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if len(fa.attached()) != 0 {
		t.Fatal("a closed node stays attached to its Faults")
	}
}

// serveSnapshotSum answers InstallSnapshot RPCs on g, storing the checksum
// of the streamed bytes in sum and closing done after the first.
func serveSnapshotSum(t *testing.T, g *GroupTransport, sum *[32]byte, done chan struct{}) {
	serve(t, g, func(rpc raft.RPC) {
		req, ok := rpc.Command.(*raft.InstallSnapshotRequest)
		if !ok {
			echoHandler(rpc)
			return
		}
		h := sha256.New()
		_, err := io.Copy(h, rpc.Reader)
		copy(sum[:], h.Sum(nil))
		rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil}, err)
		close(done)
	})
}

// Freeze: a frozen node answers nothing on its open sessions and its peers
// get no error either (an app stream's read just waits), as with a process
// stopped by SIGSTOP; Thaw lets the held bytes through.
func TestFaultsFreeze(t *testing.T) {
	fb := NewFaults()
	a := newTestNode(t, "k")
	b := newTestNode(t, "k", func(c *Config) { c.Faults = fb })
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	serve(t, ga, echoHandler)
	serve(t, gb, echoHandler)
	var resp raft.AppendEntriesResponse
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp); err != nil {
		t.Fatalf("before the freeze: %v", err)
	}
	waitFor(t, 5*time.Second, "a probe of b", func() bool { return a.PeerHealthy(string(b.Addr())) })
	fb.Freeze()
	t.Cleanup(fb.Thaw)
	// b stops answering probes: a sees it unhealthy, with its session open.
	waitFor(t, 5*time.Second, "b reported unhealthy", func() bool { return !a.PeerHealthy(string(b.Addr())) })
	done := make(chan error, 1)
	go func() {
		var r raft.AppendEntriesResponse
		done <- ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &r)
	}()
	select {
	case err := <-done:
		t.Fatalf("RPC to a frozen node answered: %v", err)
	case <-time.After(200 * time.Millisecond): // no answer, no error
	}
	fb.Thaw()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RPC held by the freeze, after Thaw: %v", err)
		}
	case <-time.After(scaled(10 * time.Second)):
		t.Fatal("RPC held by the freeze still unanswered after Thaw")
	}
}
