package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// TestRouteCallsCheckTheClient: the node serving a route call checks the
// client the call carries, whatever the node that sent it says. The
// sender here is a real resource node with a valid certificate of the
// cluster CA (a stranger may run one) and no replica of the channels, so
// every call it makes crosses real TLS to a core node; it calls its own
// node's methods with whatever proof it likes, as a modified binary
// would. Without a client credential it can neither read, write, issue
// tokens nor create or delete channels; as a resource node its own meta
// writes are refused, where a core node's pass; a token of channel x
// opens nothing of channel y. Then every kind of request a client makes
// goes through the same node with the right credential and is served.
func TestRouteCallsCheckTheClient(t *testing.T) {
	const op = "e2e-operator-token"
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1, Token: op})
	ctx := ctxT(t)
	cores := []string{"core1", "core2", "core3"}
	admin := c.Client(0)
	var x, y api.Channel
	c.WaitFor(30*time.Second, func() error {
		var err error
		if x.Token == "" {
			x, err = admin.CreateChannel(ctx, api.CreateChannelRequest{Name: "x", Nodes: cores})
		}
		if err == nil && y.Token == "" {
			y, err = admin.CreateChannel(ctx, api.CreateChannelRequest{Name: "y", Nodes: cores})
		}
		return err
	})
	c.WaitLeader("x")
	c.WaitLeader("y")
	if x.Token == "" || y.Token == "" {
		t.Fatal("a channel was created without its token")
	}
	res := c.Node("res1").Agent().Node
	put := func(key string) []byte {
		b, err := fsm.Encode(&fsm.Put{Key: []byte(key), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Written by the operator through res1: the data the attempts below
	// try to read.
	c.WaitFor(10*time.Second, func() error {
		_, err := api.NewClient(c.Node("res1").URL(), op, nil).Put(ctx, "x", "secret", []byte("s"), api.PutOptions{})
		return err
	})

	// Each attempt is a route call res1 makes with the proof given (none:
	// the node's own call).
	type attempt struct {
		name string
		call func(ctx context.Context) error
	}
	attempts := []attempt{
		{"propose", func(ctx context.Context) error { _, err := res.Propose(ctx, "x", put("k")); return err }},
		{"get", func(ctx context.Context) error {
			_, _, _, err := res.Get(ctx, "x", []byte("secret"), shard.Linearizable)
			return err
		}},
		{"list", func(ctx context.Context) error {
			_, _, _, err := res.List(ctx, "x", nil, nil, 10, shard.Stale)
			return err
		}},
		{"watch", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			return res.WaitKey(ctx, "x", []byte("secret"), 0)
		}},
		{"issue_token", func(ctx context.Context) error {
			_, err := res.IssueToken(ctx, "x", fsm.ScopeReadWrite, time.Time{})
			return err
		}},
		{"revoke_token", func(ctx context.Context) error { return res.RevokeToken(ctx, "x", "0000000000000000") }},
		{"settings", func(ctx context.Context) error {
			return res.SetChannelSettings(ctx, "x", api.ChannelSettings{PublicPrefixes: []string{""}})
		}},
		{"create_channel", func(ctx context.Context) error {
			_, err := res.CreateChannel(ctx, api.CreateChannelRequest{Name: "evil", Nodes: cores})
			return err
		}},
		{"delete_channel", func(ctx context.Context) error { return res.DeleteChannel(ctx, "x") }},
	}
	refused := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want refused with %v", what, err, want)
		}
	}
	anonymous := access.WithProof(ctx, access.Proof{Kind: access.ProofAnonymous})
	forged := access.WithProof(ctx, access.Proof{Kind: access.ProofBearer, Bearer: "not-the-operator-token"})
	otherChannel := access.WithProof(ctx, access.Proof{Kind: access.ProofBearer, Bearer: y.Token})
	for _, a := range attempts {
		// The node's own call: no client's data, and no meta write from
		// a resource node.
		refused(a.name+" as res1 itself", a.call(ctx), access.ErrForbidden)
		refused(a.name+" without a credential", a.call(anonymous), access.ErrUnauthorized)
		refused(a.name+" with a wrong token", a.call(forged), access.ErrUnauthorized)
		refused(a.name+" with channel y's token", a.call(otherChannel), access.ErrForbidden)
	}
	if _, err := res.Propose(access.WithProof(ctx, access.Proof{Kind: access.ProofLink,
		Link: access.Link{Token: "0000000000000000", Exp: "99999999999", Sig: "x"}}), "x", put("k")); !errors.Is(err, access.ErrUnauthorized) {
		t.Errorf("a write with a signed link's query: %v, want unauthorized", err)
	}
	// Nothing of it happened.
	if _, err := admin.Channel(ctx, "evil"); !api.IsNotFound(err) {
		t.Errorf("channel evil: %v, want not found", err)
	}
	if toks, err := admin.Tokens(ctx, "x"); err != nil || len(toks) != 1 {
		t.Errorf("channel x has tokens %v (%v), want only its first", toks, err)
	}
	if _, _, err := admin.Get(ctx, "x", "k", api.GetOptions{}); !api.IsNotFound(err) {
		t.Errorf("key k: %v, want not found", err)
	}

	// A core node's own meta write passes (here through a core node that
	// does not lead the meta group, so it is a route call).
	st, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	via := cores[0]
	if via == st.MetaLeader {
		via = cores[1]
	}
	if _, err := c.Node(via).Agent().Node.IssueToken(ctx, "x", fsm.ScopeReadOnly, time.Time{}); err != nil {
		t.Errorf("a core node's own meta write: %v", err)
	}

	// Through res1, every kind of client request with the right
	// credential is served by the channel's nodes.
	xrw := api.NewClient(c.Node("res1").URL(), x.Token, nil)
	if _, err := xrw.Put(ctx, "x", "pub/a", []byte("A"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := xrw.Txn(ctx, "x", api.TxnRequest{Success: []api.TxnOp{{Op: api.OpPut, Key: "t", Value: []byte("1")}}}); err != nil {
		t.Errorf("txn: %v", err)
	}
	for _, level := range []api.Consistency{api.Linearizable, api.Stale} {
		if v, _, err := xrw.Get(ctx, "x", "pub/a", api.GetOptions{Consistency: level}); err != nil || string(v) != "A" {
			t.Errorf("get %s: %q, %v", level, v, err)
		}
	}
	if l, err := xrw.List(ctx, "x", "", "", 10, ""); err != nil || len(l.Items) == 0 {
		t.Errorf("list: %v, %v", l, err)
	}
	if _, _, err := xrw.Get(ctx, "x", "pub/a", api.GetOptions{WaitIndex: 1, Wait: time.Second}); err != nil {
		t.Errorf("blocking get: %v", err)
	}
	ro, err := xrw.CreateToken(ctx, "x", api.TokenRequest{Scope: api.ScopeReadOnly})
	if err != nil {
		t.Fatalf("issue a token through res1: %v", err)
	}
	xro := api.NewClient(c.Node("res1").URL(), ro.Token, nil)
	if _, _, err := xro.Get(ctx, "x", "pub/a", api.GetOptions{}); err != nil {
		t.Errorf("get with a read-only token: %v", err)
	}
	if _, err := xro.Put(ctx, "x", "no", []byte("1"), api.PutOptions{}); !isStatus(err, http.StatusForbidden) {
		t.Errorf("put with a read-only token: %v, want 403", err)
	}
	if _, err := xrw.SetChannelSettings(ctx, "x", api.ChannelSettings{PublicPrefixes: []string{"pub/"}}); err != nil {
		t.Errorf("settings: %v", err)
	}
	link, err := xro.Sign(ctx, "x", "pub/a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	anon := func(path string) int {
		t.Helper()
		var code int
		// res1 learns the settings when its meta copy applies them.
		c.WaitFor(10*time.Second, func() error {
			resp, err := http.Get(c.Node("res1").URL() + path)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
			if code != http.StatusOK {
				return fmt.Errorf("%s: %d", path, code)
			}
			return nil
		})
		return code
	}
	anon(link.URL)                          // a signed link
	anon("/v1/channels/x/kv/pub/a")         // a public key
	anon("/v1/channels/x/kv?prefix=pub%2F") // a public listing
	if err := xrw.RevokeToken(ctx, "x", ro.ID); err != nil {
		t.Errorf("revoke through res1: %v", err)
	}
	opc := api.NewClient(c.Node("res1").URL(), op, nil)
	if _, err := opc.CreateChannel(ctx, api.CreateChannelRequest{Name: "z", Nodes: cores}); err != nil {
		t.Errorf("create a channel through res1: %v", err)
	}
	if err := opc.DeleteChannel(ctx, "z"); err != nil {
		t.Errorf("delete a channel through res1: %v", err)
	}
	// The refusals above were counted where they were served.
	refusedCalls := 0.0
	for _, name := range cores {
		refusedCalls += testcluster.Metric(t, c.Node(name).URL(), op, `shardnet_cluster_calls_refused_total{call="propose"}`)
	}
	if refusedCalls == 0 {
		t.Error("no refused route call was counted")
	}
}
