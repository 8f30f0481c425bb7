package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/transport"
)

// metaGroup is the meta group's id on the cluster port (cluster/meta.go).
const metaGroup = 0

// TestClusterPortRefusesNonVotersAndStrangers: on a real cluster (mutual
// TLS, the testcluster default), a member that is not a voter of the meta
// group (res1: resource nodes are meta non-voters) sends the meta group's
// voters votes, appends, heartbeats and a TimeoutNow with a far higher
// term, over its own authenticated connection; it also claims a voter's
// server id. Every one is refused, and no voter's term or leader moves.
// A node with no certificate, and one whose certificate another CA signed,
// do not get a connection at all.
func TestClusterPortRefusesNonVotersAndStrangers(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1})
	res := c.Node("res1")
	resID := res.Agent().Node.ServerID()
	// The meta leader adds every live node as a non-voter: wait for res1's
	// entry, so the check below refuses a member, not a stranger.
	c.WaitFor(30*time.Second, func() error {
		for i := range 3 {
			_, _, conf := c.Nodes[i].Agent().Node.MetaRaft()
			found := false
			for _, s := range conf.Servers {
				if s.ID == resID && s.Suffrage == raft.Nonvoter {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("%s: res1 (%s) is not yet a meta non-voter: %+v", c.Nodes[i].Name, resID, conf.Servers)
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
			RPCHeader: header(resID), Term: high, Leader: []byte(member.Addr())}, &ar), "not a voter")
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
