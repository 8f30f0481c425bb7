package transport

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{BindAddr: "127.0.0.1:0"}, ""},
		{"ok with advertise", Config{BindAddr: "127.0.0.1:0", AdvertiseAddr: "node1.example:7001"}, ""},
		{"no bind", Config{}, "BindAddr is required"},
		{"bind without port", Config{BindAddr: "127.0.0.1"}, "BindAddr"},
		{"unspecified host needs advertise", Config{BindAddr: ":0"}, "set AdvertiseAddr"},
		{"unspecified host with advertise", Config{BindAddr: ":0", AdvertiseAddr: "10.0.0.1:7001"}, ""},
		{"advertise without port", Config{BindAddr: "127.0.0.1:0", AdvertiseAddr: "10.0.0.1"}, "AdvertiseAddr"},
		{"advertise port 0", Config{BindAddr: "127.0.0.1:0", AdvertiseAddr: "10.0.0.1:0"}, "must name a host and a port"},
		{"negative timeout", Config{BindAddr: "127.0.0.1:0", RPCTimeout: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.cfg)
			if n != nil {
				defer n.Close()
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if tt.cfg.AdvertiseAddr != "" && string(n.Addr()) != tt.cfg.AdvertiseAddr {
					t.Fatalf("Addr = %q, want %q", n.Addr(), tt.cfg.AdvertiseAddr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRPCsOfEveryType(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	var got []any
	var mu sync.Mutex
	serve(t, gb, func(rpc raft.RPC) {
		mu.Lock()
		got = append(got, rpc.Command)
		mu.Unlock()
		echoHandler(rpc)
	})
	target := b.Addr()
	msgs := sampleMessages()
	ae := msgs[0].(*raft.AppendEntriesRequest)
	var aer raft.AppendEntriesResponse
	if err := ga.AppendEntries("b", target, ae, &aer); err != nil {
		t.Fatal(err)
	}
	if !aer.Success || aer.Term != ae.Term || aer.LastLog != 1<<62 {
		t.Fatalf("append response %+v", aer)
	}
	rv := msgs[4].(*raft.RequestVoteRequest)
	var rvr raft.RequestVoteResponse
	if err := ga.RequestVote("b", target, rv, &rvr); err != nil || !rvr.Granted || rvr.Term != rv.Term {
		t.Fatalf("vote: %v %+v", err, rvr)
	}
	pv := msgs[6].(*raft.RequestPreVoteRequest)
	var pvr raft.RequestPreVoteResponse
	if err := ga.RequestPreVote("b", target, pv, &pvr); err != nil || !pvr.Granted || pvr.Term != pv.Term {
		t.Fatalf("pre-vote: %v %+v", err, pvr)
	}
	tn := msgs[10].(*raft.TimeoutNowRequest)
	var tnr raft.TimeoutNowResponse
	if err := ga.TimeoutNow("b", target, tn, &tnr); err != nil {
		t.Fatalf("timeout now: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []any{ae, rv, pv, tn}
	if len(got) != len(want) {
		t.Fatalf("received %d rpcs, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameMessage(got[i], want[i]) {
			t.Errorf("rpc %d arrived as %+v, want %+v", i, got[i], want[i])
		}
	}
	if v := a.metric(t, "shardnet_transport_rpcs_sent_total"); v != 4 {
		t.Errorf("rpcs_sent_total = %v, want 4", v)
	}
	if v := a.metric(t, "shardnet_transport_sessions"); v != 1 {
		t.Errorf("sessions on the dialing node = %v, want 1", v)
	}
}

func TestUnknownGroupAndRemoteErrors(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(7)
	var resp raft.AppendEntriesResponse
	err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp)
	if err == nil || !strings.Contains(err.Error(), "transport: unknown group 7") {
		t.Fatalf("err = %v, want unknown group 7", err)
	}
	var remote *RemoteError
	if !errors.As(err, &remote) {
		t.Fatalf("err = %v, want a RemoteError", err)
	}
	// A Raft error comes back as the error text, and the stream stays usable.
	gb, _ := b.Group(7)
	serve(t, gb, func(rpc raft.RPC) { rpc.Respond(nil, errors.New("disk on fire")) })
	req := &raft.AppendEntriesRequest{Term: 1, LeaderCommitIndex: 3}
	if err := ga.AppendEntries("b", b.Addr(), req, &resp); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v, want the remote error", err)
	}
	if v := a.metric(t, "shardnet_transport_rpc_errors_total"); v != 2 {
		t.Errorf("rpc_errors_total = %v, want 2", v)
	}
}

func TestHeartbeatFastPath(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	// Nothing reads gb's consumer: only the fast path can answer.
	var calls atomic.Int32
	gb.SetHeartbeatHandler(func(rpc raft.RPC) {
		calls.Add(1)
		echoHandler(rpc)
	})
	var resp raft.AppendEntriesResponse
	for i := range 3 {
		if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(uint64(i+1)), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Term != uint64(i+1) || !resp.Success {
			t.Fatalf("resp %+v", resp)
		}
	}
	if calls.Load() != 3 {
		t.Fatalf("heartbeat handler called %d times, want 3", calls.Load())
	}
	// Without a handler the heartbeat goes to the consumer.
	gb.SetHeartbeatHandler(nil)
	serve(t, gb, echoHandler)
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(9), &resp); err != nil || resp.Term != 9 {
		t.Fatalf("consumer path: %v %+v", err, resp)
	}
}

func TestGroupRegistration(t *testing.T) {
	n := newTestNode(t, "k")
	g, err := n.Group(5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Group(5); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("second registration: err = %v, want ErrGroupExists", err)
	}
	if g.LocalAddr() != n.Addr() {
		t.Fatalf("LocalAddr = %q, want the node address %q", g.LocalAddr(), n.Addr())
	}
	if got := g.DecodePeer(g.EncodePeer("id", "10.1.2.3:7001")); got != "10.1.2.3:7001" {
		t.Fatalf("peer round trip = %q", got)
	}
	_ = g.Close()
	_ = g.Close() // idempotent
	g2, err := n.Group(5)
	if err != nil {
		t.Fatalf("re-registration after Close: %v", err)
	}
	_ = g.Close() // closing the old transport again must not unregister the new one
	if n.lookup(5) != g2 {
		t.Fatal("closing a stale GroupTransport unregistered its successor")
	}
	var resp raft.AppendEntriesResponse
	if err := g.AppendEntries("x", n.Addr(), heartbeatReq(1), &resp); !errors.Is(err, ErrClosed) {
		t.Fatalf("RPC on a closed group: err = %v, want ErrClosed", err)
	}
	_ = n.Close()
	if _, err := n.Group(6); !errors.Is(err, ErrClosed) {
		t.Fatalf("Group after Node.Close: err = %v, want ErrClosed", err)
	}
}

// Closing a group fails its RPCs in flight on both sides at once, not after
// the RPC timeout, and leaves other groups alone.
func TestGroupCloseFailsPendingRPCs(t *testing.T) {
	a := newTestNode(t, "k", func(c *Config) { c.RPCTimeout = time.Minute })
	b := newTestNode(t, "k", func(c *Config) { c.RPCTimeout = time.Minute })
	ga1, _ := a.Group(1)
	ga2, _ := a.Group(2)
	gb1, _ := b.Group(1) // nobody consumes: RPCs to it hang
	gb2, _ := b.Group(2)
	serve(t, gb2, echoHandler)

	send := func(g *GroupTransport) chan error {
		ch := make(chan error, 1)
		go func() {
			var resp raft.AppendEntriesResponse
			ch <- g.AppendEntries("b", b.Addr(), &raft.AppendEntriesRequest{Term: 1, LeaderCommitIndex: 1}, &resp)
		}()
		return ch
	}
	expectFail := func(ch chan error, what string) {
		t.Helper()
		select {
		case err := <-ch:
			if err == nil {
				t.Fatalf("%s: RPC succeeded", what)
			}
		case <-time.After(scaled(5 * time.Second)):
			t.Fatalf("%s: RPC still pending", what)
		}
	}
	// Receiver side closes.
	ch := send(ga1)
	waitFor(t, 5*time.Second, "the rpc to be in flight", func() bool { return a.metric(t, "shardnet_transport_rpcs_sent_total") == 1 })
	_ = gb1.Close()
	expectFail(ch, "receiver closed")

	// Sender side closes.
	gb1, _ = b.Group(1)
	_ = gb1
	ch = send(ga1)
	waitFor(t, 5*time.Second, "the rpc to be in flight", func() bool {
		a.inflightMu.Lock()
		defer a.inflightMu.Unlock()
		return len(a.inflight) == 1
	})
	_ = ga1.Close()
	expectFail(ch, "sender closed")

	// Group 2 never noticed.
	if err := <-send(ga2); err != nil {
		t.Fatalf("other group: %v", err)
	}
}

func TestWrongClusterKey(t *testing.T) {
	a, b := newTestNode(t, "secret"), newTestNode(t, "secret")
	d := newTestNode(t, "guess")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	gd, _ := d.Group(1)
	serve(t, ga, echoHandler)
	serve(t, gb, echoHandler)
	serve(t, gd, echoHandler)
	req := &raft.RequestVoteRequest{Term: 1}
	var resp raft.RequestVoteResponse

	if err := gd.RequestVote("a", a.Addr(), req, &resp); !errors.Is(err, ErrHandshake) {
		t.Fatalf("wrong key → a: err = %v, want ErrHandshake", err)
	}
	if err := ga.RequestVote("d", d.Addr(), req, &resp); !errors.Is(err, ErrHandshake) {
		t.Fatalf("a → wrong key: err = %v, want ErrHandshake", err)
	}
	if err := ga.RequestVote("b", b.Addr(), req, &resp); err != nil || !resp.Granted {
		t.Fatalf("right key: %v %+v", err, resp)
	}
	// Both ends count: the dialer that saw a bad proof, and the listener
	// whose client gave up.
	waitFor(t, 5*time.Second, "handshake failures on both nodes", func() bool {
		return a.metric(t, "shardnet_transport_handshake_failures_total") >= 2 &&
			d.metric(t, "shardnet_transport_handshake_failures_total") >= 2
	})
	if v := b.metric(t, "shardnet_transport_handshake_failures_total"); v != 0 {
		t.Fatalf("b counted %v handshake failures", v)
	}

	// Not a shardnet peer at all.
	conn, err := net.Dial("tcp", string(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	before := a.metric(t, "shardnet_transport_handshake_failures_total")
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_, err = bufio.NewReader(conn).ReadByte()
	_ = conn.Close()
	if err == nil {
		t.Fatal("the cluster port answered a non-peer")
	}
	waitFor(t, 5*time.Second, "the rejection to be counted", func() bool {
		return a.metric(t, "shardnet_transport_handshake_failures_total") > before
	})
}

// An idle group costs its consumer channel and a map entry: no goroutine and
// no buffer.
func TestPerGroupCost(t *testing.T) {
	n := newTestNode(t, "k")
	const groups = 10000
	keep := make([]*GroupTransport, 0, groups)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	for i := range groups {
		g, err := n.Group(uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, g)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if g1 := runtime.NumGoroutine(); g1 > g0 {
		t.Fatalf("registering %d groups started %d goroutines", groups, g1-g0)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / groups
	t.Logf("heap per registered group: %d bytes", per)
	if per > 1024 {
		t.Fatalf("heap per registered group = %d bytes, want <= 1 KiB", per)
	}
	runtime.KeepAlive(keep)
}

func TestAppStreams(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from %s", r.URL.Path, b.Addr())
	})}
	go func() { _ = srv.Serve(b.AppListener()) }()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return a.DialApp(ctx, addr)
		},
	}}
	defer client.CloseIdleConnections()
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("http://%s/x%d", b.Addr(), i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if want := fmt.Sprintf("hello /x%d from %s", i, b.Addr()); string(body) != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
	// A closed app listener refuses app streams; Raft traffic goes on.
	_ = b.AppListener().Close()
	if _, err := b.AppListener().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	conn, err := a.DialApp(context.Background(), string(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a refused app stream succeeded")
	}
	_ = conn.Close()
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	serve(t, gb, echoHandler)
	var resp raft.AppendEntriesResponse
	if err := ga.AppendEntries("b", b.Addr(), heartbeatReq(1), &resp); err != nil {
		t.Fatal(err)
	}
}

// patternReader yields n deterministic pseudo-random bytes.
type patternReader struct {
	rng  *rand.ChaCha8
	left int64
}

func newPattern(n int64) *patternReader {
	return &patternReader{rng: rand.NewChaCha8([32]byte{1}), left: n}
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	_, _ = r.rng.Read(p)
	r.left -= int64(len(p))
	return len(p), nil
}

func patternSum(n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, newPattern(n))
	return [32]byte(h.Sum(nil))
}

func TestInstallSnapshotStreamsExactBytes(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	const size = 9<<20 + 12345
	type got struct {
		n   int64
		sum [32]byte
		req *raft.InstallSnapshotRequest
	}
	gotCh := make(chan got, 1)
	serve(t, gb, func(rpc raft.RPC) {
		req := rpc.Command.(*raft.InstallSnapshotRequest)
		h := sha256.New()
		n, err := io.Copy(h, rpc.Reader)
		gotCh <- got{n, [32]byte(h.Sum(nil)), req}
		rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil}, nil)
	})
	req := sampleMessages()[8].(*raft.InstallSnapshotRequest)
	req.Size = size
	var resp raft.InstallSnapshotResponse
	// The data reader holds more than Size bytes: exactly Size must be sent.
	if err := ga.InstallSnapshot("b", b.Addr(), req, &resp, newPattern(size+1000)); err != nil {
		t.Fatal(err)
	}
	g := <-gotCh
	if g.n != size || g.sum != patternSum(size) {
		t.Fatalf("receiver read %d bytes (want %d), checksum match %v", g.n, int64(size), g.sum == patternSum(size))
	}
	if !resp.Success || resp.Term != req.Term || !sameMessage(g.req, req) {
		t.Fatalf("resp %+v, request arrived as %+v", resp, g.req)
	}

	// Short data: the sender fails and the receiver sees a truncated stream,
	// not a hang.
	req.Size = 1 << 20
	if err := ga.InstallSnapshot("b", b.Addr(), req, &resp, newPattern(1000)); err == nil {
		t.Fatal("InstallSnapshot with short data succeeded")
	}
	select {
	case g := <-gotCh:
		if g.n >= req.Size {
			t.Fatalf("receiver read %d bytes of a truncated snapshot", g.n)
		}
	case <-time.After(scaled(10 * time.Second)):
		t.Fatal("receiver still reading a truncated snapshot")
	}

	// Unknown group: refused before any data moves.
	gx, _ := a.Group(99)
	r := &countingReader{r: newPattern(size)}
	req.Size = size
	err := gx.InstallSnapshot("b", b.Addr(), req, &resp, r)
	if err == nil || !strings.Contains(err.Error(), "unknown group 99") {
		t.Fatalf("err = %v, want unknown group", err)
	}
	if r.n.Load() != 0 {
		t.Fatalf("%d snapshot bytes read for an unknown group", r.n.Load())
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// The heart of the design: a snapshot to a follower whose reader is stalled
// (its disk is slow, or its main loop is busy) must not delay heartbeats or
// other groups' appends to the same follower. Asserted as ordering: every
// heartbeat completes while the snapshot is still stuck. The bound per
// heartbeat is generous for a loaded 2-core machine.
func TestHeartbeatsNotBlockedBySnapshot(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga1, _ := a.Group(1)
	gb1, _ := b.Group(1)
	ga2, _ := a.Group(2)
	gb2, _ := b.Group(2)
	serve(t, gb2, echoHandler)
	gb1.SetHeartbeatHandler(echoHandler)

	started := make(chan struct{})
	release := make(chan struct{})
	serve(t, gb1, func(rpc raft.RPC) {
		req := rpc.Command.(*raft.InstallSnapshotRequest)
		_, _ = io.ReadFull(rpc.Reader, make([]byte, 1024))
		close(started)
		<-release // the group's main loop is stuck in the install
		n, err := io.Copy(io.Discard, rpc.Reader)
		rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil && n == req.Size-1024}, nil)
	})

	const size = 64 << 20 // far more than the stream window: the sender blocks
	snapDone := make(chan error, 1)
	go func() {
		var resp raft.InstallSnapshotResponse
		err := ga1.InstallSnapshot("b", b.Addr(), &raft.InstallSnapshotRequest{Term: 1, Size: size}, &resp, newPattern(size))
		if err == nil && !resp.Success {
			err = errors.New("snapshot not successful")
		}
		snapDone <- err
	}()
	select {
	case <-started:
	case <-time.After(scaled(10 * time.Second)):
		t.Fatal("snapshot never reached the follower")
	}

	var slowest time.Duration
	for i := range 20 {
		start := time.Now()
		var resp raft.AppendEntriesResponse
		if err := ga1.AppendEntries("b", b.Addr(), heartbeatReq(uint64(i+1)), &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat %d during the stalled snapshot: %v", i, err)
		}
		req := &raft.AppendEntriesRequest{Term: 1, LeaderCommitIndex: 1, Entries: []*raft.Log{{Index: uint64(i + 1), Data: make([]byte, 4096)}}}
		if err := ga2.AppendEntries("b", b.Addr(), req, &resp); err != nil || !resp.Success {
			t.Fatalf("append of another group during the stalled snapshot: %v", err)
		}
		slowest = max(slowest, time.Since(start))
	}
	select {
	case err := <-snapDone:
		t.Fatalf("snapshot finished before it was released (%v): the test did not stall it", err)
	default:
	}
	t.Logf("slowest heartbeat+append round during the stalled snapshot: %v", slowest)
	if slowest > scaled(2*time.Second) {
		t.Fatalf("a heartbeat round took %v behind a stalled snapshot", slowest)
	}
	close(release)
	select {
	case err := <-snapDone:
		if err != nil {
			t.Fatalf("snapshot after release: %v", err)
		}
	case <-time.After(scaled(20 * time.Second)):
		t.Fatal("snapshot did not finish after release")
	}
}

func TestPipeline(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	var mu sync.Mutex
	var order []uint64
	serve(t, gb, func(rpc raft.RPC) {
		mu.Lock()
		order = append(order, rpc.Command.(*raft.AppendEntriesRequest).Entries[0].Index)
		mu.Unlock()
		echoHandler(rpc)
	})
	p, err := ga.AppendEntriesPipeline("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	const total = 200
	sendErr := make(chan error, 1)
	go func() {
		for i := range total {
			req := &raft.AppendEntriesRequest{Term: 2, LeaderCommitIndex: 1, Entries: []*raft.Log{{Index: uint64(i + 1), Data: []byte("x")}}}
			if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for i := range total {
		select {
		case f := <-p.Consumer():
			if err := f.Error(); err != nil {
				t.Fatalf("future %d: %v", i, err)
			}
			if got := f.Response().LastLog; got != uint64(i+1) || f.Request().Entries[0].Index != got || !f.Response().Success {
				t.Fatalf("future %d answered index %d (request %d)", i, got, f.Request().Entries[0].Index)
			}
			if f.Start().IsZero() {
				t.Fatal("future has no start time")
			}
		case <-time.After(scaled(10 * time.Second)):
			t.Fatalf("future %d never completed", i)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, idx := range order {
		if idx != uint64(i+1) {
			t.Fatalf("follower saw index %d at position %d", idx, i)
		}
	}
	_ = p.Close()
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{}, new(raft.AppendEntriesResponse)); !errors.Is(err, raft.ErrPipelineShutdown) {
		t.Fatalf("append on a closed pipeline: %v", err)
	}
}

// A pipeline whose stream breaks fails its queued futures, so Raft falls back
// to plain AppendEntries instead of waiting.
func TestPipelineFailsOnPeerLoss(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	_, _ = b.Group(1) // never answers
	p, err := ga.AppendEntriesPipeline("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 3 {
		req := &raft.AppendEntriesRequest{Term: 2, LeaderCommitIndex: 1, Entries: []*raft.Log{{Index: uint64(i + 1)}}}
		if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	_ = b.Close()
	for i := range 3 {
		select {
		case f := <-p.Consumer():
			if f.Error() == nil || f.Response().Success {
				t.Fatalf("future %d succeeded after the peer closed", i)
			}
		case <-time.After(scaled(10 * time.Second)):
			t.Fatalf("future %d still pending after the peer closed", i)
		}
	}
}

// After a failed dial, RPCs to the same peer fail at once for a short while
// instead of each waiting out a dial.
func TestDeadPeerFailsFast(t *testing.T) {
	a := newTestNode(t, "k")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	ga, _ := a.Group(1)
	var resp raft.AppendEntriesResponse
	if err := ga.AppendEntries("x", raft.ServerAddress(dead), heartbeatReq(1), &resp); err == nil {
		t.Fatal("RPC to a closed port succeeded")
	}
	start := time.Now()
	err = ga.AppendEntries("x", raft.ServerAddress(dead), heartbeatReq(1), &resp)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		// The backoff window may have passed on a very slow machine; then
		// the error is a fresh dial failure, which is fine too.
		if time.Since(start) < dialBackoff {
			t.Fatalf("second RPC: err = %v, want the remembered dial failure", err)
		}
	}
}

func TestPeerProbe(t *testing.T) {
	var down sync.Map
	a := newTestNode(t, "k", func(c *Config) {
		c.OnPeerDown = func(addr string) { down.Store(addr, true) }
	})
	b := newTestNode(t, "k")
	addr := string(b.Addr())
	waitFor(t, 5*time.Second, "the peer to answer probes", func() bool { return a.PeerHealthy(addr) })
	_ = b.Close()
	waitFor(t, 10*time.Second, "the peer to be reported down", func() bool {
		_, ok := down.Load(addr)
		return ok && !a.PeerHealthy(addr)
	})
}

// A node that only follows (it sends its leader nothing) still probes the
// node whose heartbeats it answers, and reports it down when it dies.
func TestFollowerProbesItsLeader(t *testing.T) {
	var down sync.Map
	leader := newTestNode(t, "k", func(c *Config) { c.HeartbeatBatch = 5 * time.Millisecond })
	follower := newTestNode(t, "k", func(c *Config) {
		c.OnPeerDown = func(addr string) { down.Store(addr, true) }
	})
	gl, _ := leader.Group(1)
	gf, _ := follower.Group(1)
	gf.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil) })
	addr := string(leader.Addr())
	hb := heartbeatReq(1)
	hb.Addr = []byte(addr) // raft's RPC header names the sender
	// Heartbeats for a second (PeerHealthy is not asked: asking starts a
	// probe by itself), long enough for a few probe rounds.
	for range 20 {
		var resp raft.AppendEntriesResponse
		if err := gl.AppendEntries("f", follower.Addr(), hb, &resp); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = leader.Close()
	waitFor(t, 10*time.Second, "the follower to report its leader down", func() bool {
		_, ok := down.Load(addr)
		return ok
	})
}

// Node.Close returns promptly while a pipeline has requests in flight and
// nobody consumes its futures (a Raft that was not shut down first).
func TestNodeCloseWithBusyPipeline(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(1)
	_, _ = b.Group(1) // never answers
	p, err := ga.AppendEntriesPipeline("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range 3 * pipelineDepth {
			req := &raft.AppendEntriesRequest{Term: 2, LeaderCommitIndex: 1, Entries: []*raft.Log{{Index: uint64(i + 1)}}}
			if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
				return
			}
		}
	}()
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(scaled(10 * time.Second)):
		t.Fatal("Node.Close hung on a busy pipeline")
	}
	select {
	case <-sent:
	case <-time.After(scaled(10 * time.Second)):
		t.Fatal("pipeline AppendEntries still blocked after Node.Close")
	}
}

// A vote request to a peer that does not run the group yet is asked again
// until the group starts there (a new group's replicas start a few
// milliseconds apart), and fails only after voteWaitForGroup.
func TestVoteWaitsForThePeersGroup(t *testing.T) {
	a, b := newTestNode(t, "k"), newTestNode(t, "k")
	ga, _ := a.Group(9)
	go func() {
		time.Sleep(150 * time.Millisecond)
		gb, err := b.Group(9)
		if err != nil {
			t.Error(err)
			return
		}
		serve(t, gb, echoHandler)
	}()
	var resp raft.RequestVoteResponse
	start := time.Now()
	if err := ga.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 3}, &resp); err != nil {
		t.Fatalf("vote to a group that starts 150 ms later: %v", err)
	}
	if !resp.Granted || resp.Term != 3 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("answer %+v after %v", resp, time.Since(start))
	}
	// A group that never starts there: refused after the wait, not at once.
	gc, _ := a.Group(10)
	start = time.Now()
	var pre raft.RequestPreVoteResponse
	err := gc.RequestPreVote("b", b.Addr(), &raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 3}, &pre)
	if err == nil || !strings.Contains(err.Error(), "unknown group 10") {
		t.Fatalf("pre-vote to a group that never starts: %v", err)
	}
	if waited := time.Since(start); waited < voteWaitForGroup || waited > voteWaitForGroup+2*time.Second {
		t.Fatalf("refused after %v, want about %v", waited, voteWaitForGroup)
	}
}
