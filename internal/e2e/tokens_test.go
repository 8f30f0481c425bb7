package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestChannelTokensAcrossNodes: a channel's creation answers a read-write
// token; a token issued through one node works on every node once their
// copies of the meta state have applied it, and stops working on every
// node once its revocation is applied, and so do the links it signed.
func TestChannelTokensAcrossNodes(t *testing.T) {
	const op = "e2e-operator-token"
	c := testcluster.New(t, testcluster.Options{Core: 3, Token: op})
	ctx := ctxT(t)
	c.WaitFor(20*time.Second, func() error {
		for i := range c.Nodes {
			st, err := c.Client(i).Status(ctx)
			if err != nil {
				return err
			}
			if st.ClusterVersion != fsm.Version {
				return fmt.Errorf("%s: cluster version %d, want %d", c.Nodes[i].Name, st.ClusterVersion, fsm.Version)
			}
		}
		return nil
	})
	var ch api.Channel
	c.WaitFor(30*time.Second, func() error {
		var err error
		ch, err = c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "tok", Replicas: 3})
		return err
	})
	if _, _, ok := api.ParseToken(ch.Token); !ok {
		t.Fatalf("the create answer has no channel token: %q", ch.Token)
	}
	c.WaitLeader("tok")
	client := func(i int, token string) *api.Client { return api.NewClient(c.Nodes[i].URL(), token, nil) }

	// Issued through a node that does not lead the meta group (the
	// request is forwarded to the leader), with the channel's own
	// read-write token.
	st, err := c.Client(0).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	via := 0
	for c.Nodes[via].Name == st.MetaLeader {
		via++
	}
	start := time.Now()
	var ro api.TokenCreated
	c.WaitFor(10*time.Second, func() error {
		var err error
		ro, err = client(via, ch.Token).CreateToken(ctx, "tok", api.TokenRequest{Scope: api.ScopeReadOnly, TTL: "1h"})
		return err
	})
	c.WaitFor(10*time.Second, func() error {
		_, err := client(0, ch.Token).Put(ctx, "tok", "media/clip", []byte("frames"), api.PutOptions{})
		return err
	})
	for i := range c.Nodes {
		c.WaitFor(10*time.Second, func() error {
			_, err := client(i, ro.Token).List(ctx, "tok", "", "", 10, "")
			return err
		})
		_, err := client(i, ro.Token).Put(ctx, "tok", "x", []byte("1"), api.PutOptions{})
		if e := (*api.Error)(nil); !errors.As(err, &e) || e.Status != http.StatusForbidden {
			t.Fatalf("%s: a write with a read-only token: %v, want 403", c.Nodes[i].Name, err)
		}
	}
	t.Logf("a token issued through %s (meta leader %s) worked on every node %s later", c.Nodes[via].Name, st.MetaLeader, time.Since(start).Round(time.Millisecond))

	link, err := client(2, ro.Token).Sign(ctx, "tok", "media/clip", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(i int) (int, string) {
		resp, err := http.Get(c.Nodes[i].URL() + link.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := range c.Nodes {
		if code, body := fetch(i); code != http.StatusOK || body != "frames" {
			t.Fatalf("%s: the signed link answered %d %q", c.Nodes[i].Name, code, body)
		}
	}

	// Revoked through a node that does not lead the meta group, with the
	// operator token: refused everywhere.
	if err := client(via, op).RevokeToken(ctx, "tok", ro.ID); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for i := range c.Nodes {
		c.WaitFor(10*time.Second, func() error {
			_, err := client(i, ro.Token).List(ctx, "tok", "", "", 10, "")
			if e := (*api.Error)(nil); errors.As(err, &e) && e.Status == http.StatusUnauthorized {
				return nil
			}
			return fmt.Errorf("%s still takes the revoked token: %v", c.Nodes[i].Name, err)
		})
		if code, _ := fetch(i); code != http.StatusUnauthorized {
			t.Fatalf("%s: the link of a revoked token answered %d", c.Nodes[i].Name, code)
		}
	}
	t.Logf("the revocation took effect on every node %s after it was acknowledged", time.Since(start).Round(time.Millisecond))
	// The channel's own token still works.
	if _, err := client(1, ch.Token).List(ctx, "tok", "", "", 10, ""); err != nil {
		t.Fatal(err)
	}
}

// TestTokenWorksWhereItWasIssued: a token, or a channel, is usable through
// the node that answered its creation as soon as that answer arrives, even
// when the node does not lead the meta group and its copy of the meta state
// had not applied the entry yet when the leader acknowledged it.
func TestTokenWorksWhereItWasIssued(t *testing.T) {
	const op = "e2e-operator-token"
	c := testcluster.New(t, testcluster.Options{Core: 3, Token: op})
	ctx := ctxT(t)
	c.WaitFor(20*time.Second, func() error {
		st, err := c.Client(0).Status(ctx)
		if err != nil {
			return err
		}
		if st.ClusterVersion != fsm.Version || st.MetaLeader == "" {
			return fmt.Errorf("cluster version %d, meta leader %q", st.ClusterVersion, st.MetaLeader)
		}
		return nil
	})
	st, err := c.Client(0).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	via := 0
	for c.Nodes[via].Name == st.MetaLeader {
		via++
	}
	client := func(token string) *api.Client { return api.NewClient(c.Nodes[via].URL(), token, nil) }
	for i := range 10 {
		name := fmt.Sprintf("fresh-%d", i)
		ch, err := client(op).CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client(ch.Token).Tokens(ctx, name); err != nil {
			t.Fatalf("%s: the create answer's token, used at once through %s: %v", name, c.Nodes[via].Name, err)
		}
		for j := range 3 {
			ro, err := client(ch.Token).CreateToken(ctx, name, api.TokenRequest{Scope: api.ScopeReadOnly})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client(ro.Token).Tokens(ctx, name); api.AsError(err) == nil || api.AsError(err).Status != http.StatusForbidden {
				// A read-only token may not list tokens: 403 shows the
				// node knew it (an unknown token is 401).
				t.Fatalf("%s: token %d used at once through %s: %v, want 403", name, j, c.Nodes[via].Name, err)
			}
		}
	}
}
