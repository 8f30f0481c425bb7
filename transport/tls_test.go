package transport

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCA is a cluster CA in a temp dir.
type testCA struct{ dir string }

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	dir := t.TempDir()
	if err := WriteCA(dir, "test CA", KeyECDSA, 0, false); err != nil {
		t.Fatal(err)
	}
	return &testCA{dir: dir}
}

// files writes a certificate naming node and returns its files.
func (ca *testCA) files(t testing.TB, node string) (certFile, keyFile, caFile string) {
	t.Helper()
	certFile, keyFile, err := WriteNodeCert(ca.dir, t.TempDir(), NodeCertOptions{Node: node, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, filepath.Join(ca.dir, CACertFile)
}

func (ca *testCA) certs(t testing.TB, node string) *Certs {
	t.Helper()
	c, err := LoadCerts(ca.files(t, node))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newTLSNode starts a node speaking mutual TLS with certs.
func newTLSNode(t testing.TB, certs *Certs, edit ...func(*Config)) *testNode {
	t.Helper()
	return newTestNode(t, "", append([]func(*Config){func(c *Config) { c.TLS = certs }}, edit...)...)
}

func voteFrom(id string, term uint64) *raft.RequestVoteRequest {
	return &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte("x")},
		Term:      term, LastLogIndex: 1 << 40, LastLogTerm: term,
	}
}

func TestTLSCarriesRPCsAndNamesThePeer(t *testing.T) {
	ca := newTestCA(t)
	a, b := newTLSNode(t, ca.certs(t, "n1")), newTLSNode(t, ca.certs(t, "n2"))
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	var from atomic.Value
	serve(t, gb, func(rpc raft.RPC) {
		from.Store(string(rpc.Command.(*raft.RequestVoteRequest).ID))
		echoHandler(rpc)
	})
	var resp raft.RequestVoteResponse
	if err := ga.RequestVote("n2@1", b.Addr(), voteFrom("n1@1", 3), &resp); err != nil || !resp.Granted {
		t.Fatalf("vote over TLS: %v %+v", err, resp)
	}
	if from.Load() != "n1@1" {
		t.Fatalf("the group saw %v", from.Load())
	}
	// Heartbeats batched across groups pass the same checks.
	hb := newTLSNode(t, ca.certs(t, "n3"), func(c *Config) { c.HeartbeatBatch = 5 * time.Millisecond })
	gh, _ := hb.Group(1)
	gb.SetHeartbeatHandler(echoHandler)
	req := heartbeatReq(4)
	req.ID = []byte("n3@1")
	var aer raft.AppendEntriesResponse
	if err := gh.AppendEntries("n2@1", b.Addr(), req, &aer); err != nil || !aer.Success {
		t.Fatalf("batched heartbeat over TLS: %v %+v", err, aer)
	}
}

// A node without a certificate, with one of another CA, or whose
// certificate does not name the server id it claims gets nothing through.
func TestTLSRefusesStrangersAndImpostors(t *testing.T) {
	ca := newTestCA(t)
	b := newTLSNode(t, ca.certs(t, "n2"))
	gb, _ := b.Group(1)
	var seen atomic.Int64
	serve(t, gb, func(rpc raft.RPC) { seen.Add(1); echoHandler(rpc) })
	gb.SetHeartbeatHandler(func(rpc raft.RPC) { seen.Add(1); echoHandler(rpc) })
	var resp raft.RequestVoteResponse

	t.Run("no certificate", func(t *testing.T) {
		plain := newTestNode(t, "some-key")
		gp, _ := plain.Group(1)
		if err := gp.RequestVote("n2@1", b.Addr(), voteFrom("n1@1", 9), &resp); !errors.Is(err, ErrHandshake) {
			t.Fatalf("err = %v, want ErrHandshake", err)
		}
		// Nor by speaking TLS without a client certificate.
		conn, err := tls.Dial("tcp", string(b.Addr()), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Write([]byte{kindRPC})
			if err == nil {
				_, err = conn.Read(make([]byte, 1))
			}
			conn.Close()
		}
		if err == nil {
			t.Fatal("a TLS client without a certificate was served")
		}
	})
	t.Run("another CA", func(t *testing.T) {
		other := newTestCA(t)
		s := newTLSNode(t, other.certs(t, "n1")) // the right name, the wrong CA
		gs, _ := s.Group(1)
		serve(t, gs, echoHandler)
		if err := gs.RequestVote("n2@1", b.Addr(), voteFrom("n1@1", 9), &resp); !errors.Is(err, ErrHandshake) {
			t.Fatalf("stranger → node: err = %v, want ErrHandshake", err)
		}
		// And the node does not take the stranger for a peer either.
		a := newTLSNode(t, ca.certs(t, "n1"))
		ga, _ := a.Group(1)
		if err := ga.RequestVote("n1@1", s.Addr(), voteFrom("n1@1", 9), &resp); !errors.Is(err, ErrHandshake) {
			t.Fatalf("node → stranger: err = %v, want ErrHandshake", err)
		}
	})
	t.Run("claims another node's server id", func(t *testing.T) {
		m := newTLSNode(t, ca.certs(t, "n3"), func(c *Config) { c.HeartbeatBatch = 5 * time.Millisecond })
		gm, _ := m.Group(1)
		err := gm.RequestVote("n2@1", b.Addr(), voteFrom("n1@1", 9), &resp)
		if err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
			t.Fatalf("vote claiming n1 from n3: err = %v, want refused", err)
		}
		hb := heartbeatReq(9)
		hb.ID = []byte("n1@1")
		var aer raft.AppendEntriesResponse
		if err := gm.AppendEntries("n2@1", b.Addr(), hb, &aer); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
			t.Fatalf("batched heartbeat claiming n1 from n3: err = %v, want refused", err)
		}
		ae := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1@1")}, Term: 9,
			Entries: []*raft.Log{{Index: 1, Term: 9, Type: raft.LogCommand, Data: []byte("x")}}}
		if err := gm.AppendEntries("n2@1", b.Addr(), ae, &aer); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
			t.Fatalf("append claiming n1 from n3: err = %v, want refused", err)
		}
		if v := b.metric(t, "shardnet_transport_rpcs_refused_total"); v != 3 {
			t.Fatalf("rpcs_refused_total = %v, want 3", v)
		}
	})
	t.Run("the dialed address is another node's", func(t *testing.T) {
		a := newTLSNode(t, ca.certs(t, "n1"))
		ga, _ := a.Group(1)
		// A fresh dial: b answers, but b is n2, not the n3 the RPC is for.
		if err := ga.RequestVote("n3@1", b.Addr(), voteFrom("n1@1", 9), &resp); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), `is "n2", not "n3"`) {
			t.Fatalf("fresh dial: err = %v, want ErrHandshake naming n2 and n3", err)
		}
		// The session to n2 is open; an RPC meant for n3 still does not go.
		gb.SetVoterCheck(func(string) bool { return false }) // nothing from a reaches the group anyway
		defer gb.SetVoterCheck(nil)
		// (After the failed dial the peer is in its dial backoff a moment.)
		waitFor(t, 5*time.Second, "a session to n2, refused by the voter check", func() bool {
			err := ga.RequestVote("n2@1", b.Addr(), voteFrom("n1@1", 9), &resp)
			return err != nil && strings.Contains(err.Error(), "not a voter")
		})
		if err := ga.RequestVote("n3@1", b.Addr(), voteFrom("n1@1", 9), &resp); !errors.Is(err, ErrHandshake) {
			t.Fatalf("open session: err = %v, want ErrHandshake", err)
		}
	})
	if n := seen.Load(); n != 0 {
		t.Fatalf("the group received %d RPCs from strangers", n)
	}
}

// A node that is not a voter of the group is refused every Raft RPC,
// whatever its term; a voter passes.
func TestVoterCheckRefusesNonVoters(t *testing.T) {
	ca := newTestCA(t)
	b := newTLSNode(t, ca.certs(t, "n2"))
	gb, _ := b.Group(1)
	var seen atomic.Int64
	serve(t, gb, func(rpc raft.RPC) { seen.Add(1); echoHandler(rpc) })
	gb.SetVoterCheck(func(node string) bool { return node == "n1" || node == "n2" })

	voter := newTLSNode(t, ca.certs(t, "n1"))
	gv, _ := voter.Group(1)
	var resp raft.RequestVoteResponse
	if err := gv.RequestVote("n2@1", b.Addr(), voteFrom("n1@1", 5), &resp); err != nil || !resp.Granted {
		t.Fatalf("voter: %v %+v", err, resp)
	}
	if seen.Load() != 1 {
		t.Fatalf("the group saw %d RPCs, want 1", seen.Load())
	}

	member := newTLSNode(t, ca.certs(t, "res1"))
	gm, _ := member.Group(1)
	if err := gm.RequestVote("n2@1", b.Addr(), voteFrom("res1@1", 50), &resp); err == nil || !strings.Contains(err.Error(), "not a voter of group 1") {
		t.Fatalf("non-voter vote: err = %v, want refused", err)
	}
	var pvr raft.RequestPreVoteResponse
	pv := &raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("res1@1")}, Term: 50}
	if err := gm.RequestPreVote("n2@1", b.Addr(), pv, &pvr); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
		t.Fatalf("non-voter pre-vote: err = %v, want refused", err)
	}
	var tnr raft.TimeoutNowResponse
	tn := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("res1@1")}}
	if err := gm.TimeoutNow("n2@1", b.Addr(), tn, &tnr); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
		t.Fatalf("non-voter timeout-now: err = %v, want refused", err)
	}
	var aer raft.AppendEntriesResponse
	ae := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("res1@1")}, Term: 50,
		Entries: []*raft.Log{{Index: 1, Term: 50, Type: raft.LogCommand, Data: []byte("x")}}}
	if err := gm.AppendEntries("n2@1", b.Addr(), ae, &aer); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
		t.Fatalf("non-voter append: err = %v, want refused", err)
	}
	snap := &raft.InstallSnapshotRequest{RPCHeader: raft.RPCHeader{ID: []byte("res1@1")}, Term: 50, Size: 3}
	var isr raft.InstallSnapshotResponse
	if err := gm.InstallSnapshot("n2@1", b.Addr(), snap, &isr, strings.NewReader("abc")); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
		t.Fatalf("non-voter snapshot: err = %v, want refused", err)
	}
	if seen.Load() != 1 {
		t.Fatalf("the group saw %d RPCs, want only the voter's", seen.Load())
	}
	if v := b.metric(t, "shardnet_transport_rpcs_refused_total"); v != 5 {
		t.Fatalf("rpcs_refused_total = %v, want 5", v)
	}
}

// A node the replica check vouches for (placed on the group by the meta
// state) may send AppendEntries and InstallSnapshot though it is not a
// voter, never RequestVote or TimeoutNow; a node it does not vouch for is
// refused all four.
func TestReplicaCheckLetsPlacedNodesReplicateOnly(t *testing.T) {
	ca := newTestCA(t)
	b := newTLSNode(t, ca.certs(t, "n2"))
	gb, _ := b.Group(1)
	var seen atomic.Int64
	serve(t, gb, func(rpc raft.RPC) { seen.Add(1); echoHandler(rpc) })
	gb.SetVoterCheck(func(node string) bool { return node == "n2" })
	gb.SetReplicaCheck(func(node string) bool { return node == "n4" })
	for _, tc := range []struct {
		node      string
		replicate bool
	}{{"n4", true}, {"res1", false}} {
		g, _ := newTLSNode(t, ca.certs(t, tc.node)).Group(1)
		id := []byte(tc.node + "@1")
		var aer raft.AppendEntriesResponse
		ae := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: id}, Term: 7,
			Entries: []*raft.Log{{Index: 1, Term: 7, Type: raft.LogCommand, Data: []byte("x")}}}
		if err := g.AppendEntries("n2@1", b.Addr(), ae, &aer); (err == nil) != tc.replicate {
			t.Errorf("%s append: err = %v, want passed %v", tc.node, err, tc.replicate)
		}
		snap := &raft.InstallSnapshotRequest{RPCHeader: raft.RPCHeader{ID: id}, Term: 7, Size: 3}
		var isr raft.InstallSnapshotResponse
		if err := g.InstallSnapshot("n2@1", b.Addr(), snap, &isr, strings.NewReader("abc")); (err == nil) != tc.replicate {
			t.Errorf("%s snapshot: err = %v, want passed %v", tc.node, err, tc.replicate)
		}
		var resp raft.RequestVoteResponse
		if err := g.RequestVote("n2@1", b.Addr(), voteFrom(tc.node+"@1", 50), &resp); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
			t.Errorf("%s vote: err = %v, want refused", tc.node, err)
		}
		var tnr raft.TimeoutNowResponse
		if err := g.TimeoutNow("n2@1", b.Addr(), &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: id}}, &tnr); err == nil || !strings.Contains(err.Error(), ErrRefused.Error()) {
			t.Errorf("%s timeout-now: err = %v, want refused", tc.node, err)
		}
	}
	if seen.Load() != 2 {
		t.Fatalf("the group saw %d RPCs, want n4's append and snapshot", seen.Load())
	}
}

// A certificate names the node's role as the CA issued it; a role other
// than core or resource is refused when the certificate is made.
func TestNodeCertNamesItsRole(t *testing.T) {
	ca := newTestCA(t)
	for _, role := range []string{RoleCore, RoleResource, ""} {
		cf, kf, err := WriteNodeCert(ca.dir, t.TempDir(), NodeCertOptions{Node: "n1", Role: role}, false)
		if err != nil {
			t.Fatal(err)
		}
		c, err := LoadCerts(cf, kf, filepath.Join(ca.dir, CACertFile))
		if err != nil || c.Role() != role || c.NodeID() != "n1" {
			t.Fatalf("role %q: loaded %v (%v)", role, c, err)
		}
	}
	if _, _, err := WriteNodeCert(ca.dir, t.TempDir(), NodeCertOptions{Node: "n1", Role: "admin"}, false); err == nil {
		t.Fatal("a certificate of role admin was made")
	}
}

// flipProxy forwards TCP connections to target; once armed, it flips one
// byte in the middle of the next chunk of at least 1 KiB going from client
// to server.
type flipProxy struct {
	ln      net.Listener
	target  string
	armed   atomic.Bool
	flipped atomic.Bool
	wg      sync.WaitGroup
}

func newFlipProxy(t *testing.T, target string) *flipProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flipProxy{ln: ln, target: target}
	var conns sync.Map
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, s)
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.pipe(s, c, true); s.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(c, s any) bool { c.(net.Conn).Close(); s.(net.Conn).Close(); return true })
		p.wg.Wait()
	})
	return p
}

func (p *flipProxy) pipe(dst, src net.Conn, flip bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if flip && n >= 1024 && p.armed.Load() && p.flipped.CompareAndSwap(false, true) {
				buf[n/2] ^= 0x01
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *flipProxy) addr() raft.ServerAddress { return raft.ServerAddress(p.ln.Addr().String()) }

// A byte changed in flight: with TLS the connection drops and the group
// receives nothing; with the cluster-key handshake alone (no MAC on frames)
// the changed entry reaches the group, which is why TLS is the default.
func TestByteFlippedInFlight(t *testing.T) {
	payload := bytes.Repeat([]byte("a"), 48<<10)
	run := func(t *testing.T, a, b *testNode) (delivered [][]byte, err error) {
		ga, _ := a.Group(1)
		gb, _ := b.Group(1)
		var mu sync.Mutex
		serve(t, gb, func(rpc raft.RPC) {
			if ae, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				mu.Lock()
				for _, e := range ae.Entries {
					delivered = append(delivered, e.Data)
				}
				mu.Unlock()
			}
			echoHandler(rpc)
		})
		p := newFlipProxy(t, string(b.Addr()))
		var aer raft.AppendEntriesResponse
		// A first exchange establishes the session, untouched.
		if err := ga.AppendEntries("n2@1", p.addr(), heartbeatReqFrom("n1@1", 1), &aer); err != nil {
			t.Fatalf("first exchange: %v", err)
		}
		p.armed.Store(true)
		ae := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1@1")}, Term: 1,
			Entries: []*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: payload}}}
		err = ga.AppendEntries("n2@1", p.addr(), ae, &aer)
		if !p.flipped.Load() {
			t.Fatal("the proxy flipped nothing")
		}
		mu.Lock()
		defer mu.Unlock()
		return delivered, err
	}
	t.Run("tls", func(t *testing.T) {
		ca := newTestCA(t)
		a, b := newTLSNode(t, ca.certs(t, "n1"), noWait), newTLSNode(t, ca.certs(t, "n2"))
		delivered, err := run(t, a, b)
		if err == nil {
			t.Fatal("the append succeeded over a tampered connection")
		}
		if len(delivered) != 0 {
			t.Fatalf("the group received %d entries from a tampered connection", len(delivered))
		}
		waitFor(t, 5*time.Second, "the tampered session to close", func() bool {
			return b.metric(t, "shardnet_transport_sessions") == 0
		})
	})
	t.Run("cluster key only", func(t *testing.T) {
		a, b := newTestNode(t, "k", noWait), newTestNode(t, "k")
		delivered, err := run(t, a, b)
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if len(delivered) != 1 || bytes.Equal(delivered[0], payload) {
			t.Fatalf("want the altered entry delivered (the reason for TLS), got %d entries, intact=%v",
				len(delivered), len(delivered) == 1 && bytes.Equal(delivered[0], payload))
		}
	})
}

func noWait(c *Config) { c.ReplicationWait = -1 }

func heartbeatReqFrom(id string, term uint64) *raft.AppendEntriesRequest {
	r := heartbeatReq(term)
	r.ID = []byte(id)
	return r
}

// Replacing a node's certificate and reloading it under load fails no RPC,
// and the next connection shows the new certificate.
func TestCertificateRotationUnderLoad(t *testing.T) {
	ca := newTestCA(t)
	certFile, keyFile, caFile := ca.files(t, "n1")
	ac, err := LoadCerts(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newTLSNode(t, ac), newTLSNode(t, ca.certs(t, "n2"))
	ga, _ := a.Group(1)
	gb, _ := b.Group(1)
	ga2, _ := a.Group(2)
	serve(t, ga2, echoHandler)
	serve(t, gb, echoHandler)
	gb2, _ := b.Group(2)
	oldSerial := ac.Leaf().SerialNumber

	// Load both ways (a dials b, b dials a), bounded in time and count.
	var failures, done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, dir := range []struct {
		g    *GroupTransport
		to   raft.ServerAddress
		from string
		id   raft.ServerID
	}{{ga, b.Addr(), "n1@1", "n2@1"}, {gb2, a.Addr(), "n2@1", "n1@1"}} {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 100000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var resp raft.RequestVoteResponse
					if err := dir.g.RequestVote(dir.id, dir.to, voteFrom(dir.from, 1), &resp); err != nil {
						failures.Add(1)
						t.Errorf("rpc during rotation: %v", err)
					}
					done.Add(1)
				}
			}()
		}
	}
	waitFor(t, 5*time.Second, "load", func() bool { return done.Load() > 200 })
	// Replace the files as an operator would (shardnet tls cert create
	// -force), then reload (SIGHUP).
	if _, _, err := WriteNodeCert(ca.dir, filepath.Dir(certFile), NodeCertOptions{Node: "n1"}, true); err != nil {
		t.Fatal(err)
	}
	if err := ac.Reload(); err != nil {
		t.Fatal(err)
	}
	if ac.Leaf().SerialNumber.Cmp(oldSerial) == 0 {
		t.Fatal("reload kept the old certificate")
	}
	before := done.Load()
	waitFor(t, 5*time.Second, "load after the reload", func() bool { return done.Load() > before+200 })
	// A new connection to a presents the new certificate.
	cc, ck, _ := ca.files(t, "n9")
	client, err := tls.LoadX509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", string(a.Addr()), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	got := conn.ConnectionState().PeerCertificates[0].SerialNumber
	conn.Close()
	if got.Cmp(ac.Leaf().SerialNumber) != 0 {
		t.Fatalf("a new connection got serial %v, want the new %v", got, ac.Leaf().SerialNumber)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d RPCs failed during the rotation", failures.Load())
	}
}

func TestReloadRefusesAnotherNodeOrABrokenPair(t *testing.T) {
	ca := newTestCA(t)
	certFile, keyFile, caFile := ca.files(t, "n1")
	c, err := LoadCerts(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	serial := c.Leaf().SerialNumber
	otherCert, otherKey, _ := ca.files(t, "n2")
	copyFile(t, otherCert, certFile)
	copyFile(t, otherKey, keyFile)
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), `names node "n2"`) {
		t.Fatalf("reload to another node's certificate: %v", err)
	}
	// A key that does not match the certificate (half-way through a copy).
	if _, _, err := WriteNodeCert(ca.dir, t.TempDir(), NodeCertOptions{Node: "n1"}, false); err != nil {
		t.Fatal(err)
	}
	n1Cert, _, _ := ca.files(t, "n1")
	copyFile(t, n1Cert, certFile) // keyFile still holds n2's key
	if err := c.Reload(); err == nil {
		t.Fatal("reload took a certificate with someone else's key")
	}
	if c.NodeID() != "n1" || c.Leaf().SerialNumber.Cmp(serial) != 0 {
		t.Fatal("a failed reload changed the certificate in force")
	}
	// A certificate from another CA.
	other := newTestCA(t)
	oc, ok, _ := other.files(t, "n1")
	copyFile(t, oc, certFile)
	copyFile(t, ok, keyFile)
	if err := c.Reload(); err == nil {
		t.Fatal("reload took a certificate of another CA")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Raft groups elect, replicate and converge over TLS, with every server id
// its node's (the checks in auth.go and expectPeer pass real traffic).
func TestRaftOverTLS(t *testing.T) {
	gids := []uint64{1, 2, 3, 4}
	c := newRaftClusterTLS(t, 3, gids, nil, true)
	c.waitLeaders(30 * time.Second)
	c.applyAll("e", 20)
	c.waitConverged(20, 30*time.Second)
	for i, n := range c.nodes {
		if v := n.metric(t, "shardnet_transport_rpcs_refused_total") + n.metric(t, "shardnet_transport_handshake_failures_total"); v != 0 {
			t.Errorf("node %d refused %v RPCs or handshakes of its own cluster", i, v)
		}
	}
}

// The application learns which node opened an app or call stream.
func TestPeerNodeOfAppStreams(t *testing.T) {
	ca := newTestCA(t)
	a, b := newTLSNode(t, ca.certs(t, "n1")), newTLSNode(t, ca.certs(t, "n2"))
	for _, dial := range []struct {
		name string
		dial func() (net.Conn, error)
		ln   net.Listener
	}{
		{"app", func() (net.Conn, error) { return a.DialApp(t.Context(), string(b.Addr())) }, b.AppListener()},
		{"call", func() (net.Conn, error) { return a.DialCall(t.Context(), string(b.Addr())) }, b.CallListener()},
	} {
		c, err := dial.dial()
		if err != nil {
			t.Fatal(err)
		}
		got, err := dial.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if PeerNode(got) != "n1" {
			t.Errorf("%s stream: PeerNode = %q, want n1", dial.name, PeerNode(got))
		}
		c.Close()
		got.Close()
	}
	if PeerNode(nil) != "" {
		t.Error("PeerNode of a foreign conn")
	}
}
