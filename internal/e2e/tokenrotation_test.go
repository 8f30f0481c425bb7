package e2e

import (
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestOperatorTokenRotation: the operator token is replaced on running
// nodes (what SIGHUP does with -token-file), with no restart and no
// moment without a working token. A write through a node holding no
// replica is a route call that the serving node checks again, so a token
// only one node knows is refused: every node takes the new token before
// clients use it, and only then is the old one dropped.
func TestOperatorTokenRotation(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1, Token: "old"})
	ctx := ctxT(t)
	cores := []string{"core1", "core2", "core3"}
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "rot", Nodes: cores})
		if api.IsConflict(err) {
			return nil
		}
		return err
	})
	c.WaitLeader("rot")
	res := c.Node("res1").Agent()
	core := c.Node("core1").Agent()
	put := func(a interface{ URL() string }, token string) error {
		_, err := api.NewClient(a.URL(), token, nil).Put(ctx, "rot", "k", []byte("v"), api.PutOptions{})
		return err
	}
	setAll := func(tokens string) {
		t.Helper()
		for _, name := range append(cores, "res1") {
			if err := c.Node(name).Agent().SetOperatorTokens(tokens); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	c.WaitFor(30*time.Second, func() error { return put(res, "old") })
	if err := put(res, "new"); !api.IsUnauthorized(err) {
		t.Fatalf("the new token before the rotation: %v, want 401", err)
	}
	// Only the entry node knows the new token: the core node serving the
	// forwarded write refuses it.
	if err := res.SetOperatorTokens("old\nnew"); err != nil {
		t.Fatal(err)
	}
	if err := put(res, "new"); !api.IsUnauthorized(err) {
		t.Fatalf("a token only the entry node knows: %v, want 401 from the serving node", err)
	}
	setAll("old\nnew")
	for _, tok := range []string{"old", "new"} {
		if err := put(res, tok); err != nil {
			t.Fatalf("during the rotation, %q through a node without a replica: %v", tok, err)
		}
		if err := put(core, tok); err != nil {
			t.Fatalf("during the rotation, %q through a core node: %v", tok, err)
		}
	}
	setAll("new")
	if err := put(res, "new"); err != nil {
		t.Fatalf("after the rotation, the new token: %v", err)
	}
	for _, a := range []interface{ URL() string }{res, core} {
		if err := put(a, "old"); !api.IsUnauthorized(err) {
			t.Fatalf("after the rotation, the old token through %s: %v, want 401", a.URL(), err)
		}
	}
}
