package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/shard"
)

// TestFilesThroughTheRouteCheckTheClient: with an operator token, a
// node without a replica of the channel serves its files through route
// calls that carry the client's credential (docs/security.md "Cluster
// port"): a channel's token uploads, lists and downloads a file there, and
// so does a signed link to the file, while the node's own stat of the file
// and one with another channel's token are refused by the replica that
// serves the call.
func TestFilesThroughTheRouteCheckTheClient(t *testing.T) {
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
	res1 := c.Node("res1")
	viaRes := api.NewClient(res1.URL(), x.Token, nil)
	data := randomBytes(3, 5*mib)
	c.WaitFor(10*time.Second, func() error {
		_, err := viaRes.PutFile(ctx, "x", "pics/a.bin", bytes.NewReader(data), int64(len(data)), api.PutFileOptions{})
		return err
	})
	if _, got := getAll(t, viaRes, "x", "pics/a.bin", api.GetFileOptions{}); !bytes.Equal(got, data) {
		t.Fatalf("download through res1 with x's token: %d bytes", len(got))
	}
	if l, err := viaRes.ListFiles(ctx, "x", "pics/", "", 10); err != nil || len(l.Files) != 1 {
		t.Fatalf("list through res1: %+v, %v", l, err)
	}
	link, err := api.NewClient(c.Nodes[0].URL(), x.Token, nil).SignFile(ctx, "x", "pics/a.bin", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(res1.URL() + link.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("signed link through res1: %d, %d bytes, %v", resp.StatusCode, len(got), err)
	}

	node := res1.Agent().Node
	stat := func(ctx context.Context) error {
		_, _, err := node.StatFile(ctx, "x", "pics/a.bin", shard.Linearizable)
		return err
	}
	if err := stat(ctx); !errors.Is(err, access.ErrForbidden) {
		t.Errorf("res1's own stat of a file: %v, want forbidden", err)
	}
	if err := stat(access.WithProof(ctx, access.Proof{Kind: access.ProofBearer, Bearer: y.Token})); !errors.Is(err, access.ErrForbidden) {
		t.Errorf("a stat with channel y's token: %v, want forbidden", err)
	}
	if err := stat(access.WithProof(ctx, access.Proof{Kind: access.ProofAnonymous})); !errors.Is(err, access.ErrUnauthorized) {
		t.Errorf("a stat without a credential: %v, want unauthorized", err)
	}
}
