package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/agent"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/transport"
)

// metaGroup is the meta group's id on the cluster port (cluster/meta.go).
const metaGroup = 0

// TestClusterPortRefusesNonVotersAndStrangers: on a real cluster (mutual
// TLS, the testcluster default), a member that is not a voter of the meta
// group (res1: a resource node, which follows the meta state by watch from
// cluster version 5 and was a meta non-voter before) sends the meta group's
// voters votes, appends, heartbeats and a TimeoutNow with a far higher
// term, over its own authenticated connection; it also claims a voter's
// server id. Every one is refused, and no voter's term or leader moves.
// A node with no certificate, and one whose certificate another CA signed,
// do not get a connection at all.
func TestClusterPortRefusesNonVotersAndStrangers(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1})
	res := c.Node("res1")
	resID := res.Agent().Node.ServerID()
	// Wait until res1 is a registered member that follows the meta state
	// by watch, in no meta configuration, so the check below refuses a
	// member, not a stranger.
	c.WaitFor(30*time.Second, func() error {
		if res.Agent().Node.MetaFollowing() == "" {
			return errors.New("res1 does not follow the meta state by watch yet")
		}
		for i := range 3 {
			if _, ok := c.Nodes[i].Agent().Node.Meta().Node("res1"); !ok {
				return fmt.Errorf("%s: res1 is not registered", c.Nodes[i].Name)
			}
			_, _, conf := c.Nodes[i].Agent().Node.MetaRaft()
			for _, s := range conf.Servers {
				if s.ID == resID {
					return fmt.Errorf("%s: res1 (%s) is still in the meta configuration: %+v", c.Nodes[i].Name, resID, conf.Servers)
				}
			}
		}
		return nil
	})
	type view struct {
		term   uint64
		leader raft.ServerID
	}
	views := func() []view {
		var vs []view
		for i := range 3 {
			term, leader, _ := c.Nodes[i].Agent().Node.MetaRaft()
			vs = append(vs, view{term, leader})
		}
		return vs
	}
	var before []view
	c.WaitFor(10*time.Second, func() error {
		before = views()
		for _, v := range before {
			if v.leader == "" || v != before[0] {
				return fmt.Errorf("meta views differ or have no leader: %+v", before)
			}
		}
		return nil
	})
	high := before[0].term + 100

	// res1's own identity: its certificate and key, a transport of its own.
	certFile, keyFile := res.CertFiles()
	caFile := filepath.Join(c.CADir(), transport.CACertFile)
	certs, err := transport.LoadCerts(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	member := newRawTransport(t, transport.Config{TLS: certs})
	g, err := member.Group(metaGroup)
	if err != nil {
		t.Fatal(err)
	}
	header := func(id raft.ServerID) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(member.Addr())}
	}
	wantRefused := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it refused (%q)", what, err, want)
		}
	}
	for i := range 3 {
		nd := c.Nodes[i].Agent().Node
		to, id := raft.ServerAddress(nd.ClusterAddr()), nd.ServerID()
		var vr raft.RequestVoteResponse
		wantRefused("vote to "+c.Nodes[i].Name, g.RequestVote(id, to, &raft.RequestVoteRequest{
			RPCHeader: header(resID), Term: high, LastLogIndex: 1 << 40, LastLogTerm: high}, &vr), "not a voter")
		var pr raft.RequestPreVoteResponse
		wantRefused("pre-vote to "+c.Nodes[i].Name, g.RequestPreVote(id, to, &raft.RequestPreVoteRequest{
			RPCHeader: header(resID), Term: high, LastLogIndex: 1 << 40, LastLogTerm: high}, &pr), "not a voter")
		var ar raft.AppendEntriesResponse
		wantRefused("heartbeat to "+c.Nodes[i].Name, g.AppendEntries(id, to, &raft.AppendEntriesRequest{
			RPCHeader: header(resID), Term: high}, &ar), "not a voter")
		wantRefused("append to "+c.Nodes[i].Name, g.AppendEntries(id, to, &raft.AppendEntriesRequest{
			RPCHeader: header(resID), Term: high, PrevLogEntry: 0, PrevLogTerm: 0, LeaderCommitIndex: 1 << 40,
			Entries: []*raft.Log{{Index: 1, Term: high, Type: raft.LogCommand, Data: []byte("forged")}}}, &ar), "not a voter")
		var tr raft.TimeoutNowResponse
		wantRefused("timeout-now to "+c.Nodes[i].Name, g.TimeoutNow(id, to, &raft.TimeoutNowRequest{RPCHeader: header(resID)}, &tr), "not a voter")
		// A voter's server id from res1's connection.
		other := c.Nodes[(i+1)%3].Agent().Node.ServerID()
		wantRefused("vote as "+string(other), g.RequestVote(id, to, &raft.RequestVoteRequest{
			RPCHeader: header(other), Term: high, LastLogIndex: 1 << 40, LastLogTerm: high}, &vr), "is not of node")
	}
	// Strangers: no certificate (the cluster-key handshake), another CA.
	plain := newRawTransport(t, transport.Config{ClusterKey: []byte("test-cluster-key")})
	other := t.TempDir()
	if err := transport.WriteCA(other, "another CA", transport.KeyEd25519, 0, false); err != nil {
		t.Fatal(err)
	}
	oc, ok, err := transport.WriteNodeCert(other, other, transport.NodeCertOptions{Node: "core1", KeyType: transport.KeyEd25519}, false)
	if err != nil {
		t.Fatal(err)
	}
	strangerCerts, err := transport.LoadCerts(oc, ok, filepath.Join(other, transport.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	stranger := newRawTransport(t, transport.Config{TLS: strangerCerts})
	for name, n := range map[string]*transport.Node{"no certificate": plain, "another CA": stranger} {
		sg, err := n.Group(metaGroup)
		if err != nil {
			t.Fatal(err)
		}
		nd := c.Nodes[0].Agent().Node
		var vr raft.RequestVoteResponse
		err = sg.RequestVote(nd.ServerID(), raft.ServerAddress(nd.ClusterAddr()), &raft.RequestVoteRequest{
			RPCHeader: header(c.Nodes[1].Agent().Node.ServerID()), Term: high, LastLogIndex: 1 << 40, LastLogTerm: high}, &vr)
		if !errors.Is(err, transport.ErrHandshake) {
			t.Errorf("%s: err = %v, want ErrHandshake", name, err)
		}
	}
	// Each refused RPC was answered only after the check, before Raft saw
	// it: had one reached a voter, its term would already be higher.
	if after := views(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("meta term or leader moved: before %+v, after %+v", before, after)
	}
	// Two votes refused on each node: res1's own, and the one in a voter's
	// name.
	if v := testcluster.Metric(t, c.Nodes[0].URL(), "", `shardnet_transport_rpcs_refused_total{type="request_vote"}`); v != 2 {
		t.Fatalf("core1 counted %v refused votes, want 2", v)
	}
}

// newRawTransport starts a bare cluster-port transport on loopback, as a
// node (or an impostor) would have, closed at test end.
func newRawTransport(t *testing.T, cfg transport.Config) *transport.Node {
	t.Helper()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.ReplicationWait = -1
	n, err := transport.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// TestCertificateRotationKeepsServing: while a client writes to a
// channel's leader, the leader's certificate is replaced and reloaded (what
// SIGHUP does), and then a follower crashes and comes back, so it dials the
// leader afresh and must accept the new certificate. No write fails, the
// new connection shows the new certificate, and the follower catches up.
func TestCertificateRotationKeepsServing(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	ch := c.CreateChannel("rot", 3)
	leader := c.Index(c.WaitLeader("rot"))
	follower := (leader + 1) % 3
	cl := c.Client(leader)

	var written, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx := context.Background()
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := cl.Put(ctx, "rot", fmt.Sprintf("k%03d", i%500), []byte("v"), api.PutOptions{}); err != nil {
				failed.Add(1)
				t.Errorf("write %d: %v", i, err)
				continue
			}
			written.Add(1)
		}
	}()
	stopWriter := sync.OnceFunc(func() { close(stop); <-done })
	defer stopWriter()
	c.WaitFor(10*time.Second, func() error { return atLeast(&written, 50) })

	nd := c.Nodes[leader]
	certFile, _ := nd.CertFiles()
	old := peerSerial(t, c, nd)
	if _, _, err := transport.WriteNodeCert(c.CADir(), filepath.Dir(certFile), transport.NodeCertOptions{Node: nd.Name, Role: nd.Role}, true); err != nil {
		t.Fatal(err)
	}
	if err := nd.ReloadCerts(); err != nil {
		t.Fatal(err)
	}
	if now := peerSerial(t, c, nd); now == old {
		t.Fatalf("a new connection still gets the old certificate %s", old)
	}
	before := written.Load()
	c.WaitFor(10*time.Second, func() error { return atLeast(&written, before+50) })

	c.Kill(follower)
	c.Start(follower)
	c.WaitFor(30*time.Second, func() error {
		lr, ok := c.Nodes[leader].Agent().Node.Shards().Replica(ch.GroupID)
		if !ok {
			return fmt.Errorf("no replica on the leader")
		}
		fa := c.Nodes[follower].Agent()
		if fa == nil {
			return fmt.Errorf("follower not running")
		}
		fr, ok := fa.Node.Shards().Replica(ch.GroupID)
		if !ok {
			return fmt.Errorf("the follower has not opened its replica yet")
		}
		if got, want := fr.FSM().Applied(), lr.FSM().Applied(); got+20 < want {
			return fmt.Errorf("the restarted follower applied %d, the leader %d", got, want)
		}
		return nil
	})
	before = written.Load()
	c.WaitFor(10*time.Second, func() error { return atLeast(&written, before+50) })
	stopWriter()
	if failed.Load() != 0 {
		t.Fatalf("%d writes failed during the rotation", failed.Load())
	}
	t.Logf("%d writes, none failed", written.Load())
}

func atLeast(n *atomic.Int64, want int64) error {
	if got := n.Load(); got < want {
		return fmt.Errorf("%d writes, want %d", got, want)
	}
	return nil
}

// peerSerial dials the node's cluster port as a fresh peer of the cluster
// CA would and returns the serial of the certificate the node shows.
func peerSerial(t *testing.T, c *testcluster.Cluster, nd *testcluster.Node) string {
	t.Helper()
	dir := t.TempDir()
	cf, kf, err := transport.WriteNodeCert(c.CADir(), dir, transport.NodeCertOptions{Node: "probe"}, false)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", nd.Agent().Node.ClusterAddr(), &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair},
		InsecureSkipVerify: true, // only the serial is read
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestNodeOfAnotherCACannotJoin: a real node whose certificate another CA
// signed joins the cluster's gossip (it knows the gossip key) and is even
// registered by the meta leader, but no cluster connection to or from it
// is ever made: it learns no meta leader and none of the cluster's
// channels, and the cluster's nodes count the refused handshakes.
func TestNodeOfAnotherCACannotJoin(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("before", 3)
	other := t.TempDir()
	if err := transport.WriteCA(other, "another CA", transport.KeyECDSA, 0, false); err != nil {
		t.Fatal(err)
	}
	cf, kf, err := transport.WriteNodeCert(other, filepath.Join(other, "res9"), transport.NodeCertOptions{Node: "res9", Role: transport.RoleResource}, false)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := transport.LoadCerts(cf, kf, filepath.Join(other, transport.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	var join []string
	for _, nd := range c.Nodes {
		join = append(join, nd.Agent().Node.GossipAddr())
	}
	a, err := agent.Start(agent.Options{
		Cluster: cluster.Config{
			Name: "res9", Role: fsm.RoleResource, DataDir: filepath.Join(other, "data"), BindAddr: "127.0.0.1",
			GossipPort: testcluster.FreePort(t), ClusterPort: testcluster.FreePort(t), Join: join,
			ClusterKey: c.ClusterKey(), GossipKey: c.GossipKey, LocalGossip: true, TLS: certs,
		},
		HTTPBind: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	// The meta leader learns of res9 by gossip and tries to replicate to
	// it: the refusals show that it tried.
	c.WaitFor(30*time.Second, func() error {
		var sum float64
		for _, nd := range c.Nodes {
			sum += testcluster.Metric(t, nd.URL(), "", "shardnet_transport_handshake_failures_total")
		}
		if sum < 3 {
			return fmt.Errorf("%v refused handshakes so far", sum)
		}
		return nil
	})
	st, err := a.Node.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.MetaLeader != "" || st.ClusterID != "" {
		t.Fatalf("the stranger learned the meta group: %+v", st)
	}
	if _, ok := a.Node.Meta().Channel("before"); ok {
		t.Fatal("the stranger learned the cluster's channels")
	}
}
