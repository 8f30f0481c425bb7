package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

func clientFor(t *testing.T, cfg Config) (*api.Client, *Server, string) {
	t.Helper()
	s, hs := testServer(t, cfg)
	// A nil http.Client: the default transport honours Expect: 100-continue.
	return api.NewClient(hs.URL, cfg.Token, nil), s, hs.URL
}

func u64(n uint64) *uint64 { return &n }

// TestKeyEscapingRoundTrip: keys the URL layer could mangle reach the
// backend as the exact bytes the client meant, and come back from Get and
// List unchanged.
func TestKeyEscapingRoundTrip(t *testing.T) {
	keys := []string{
		"a/b", "a%2Fb", "%", "%%41", "..", ".", "a/../b", "a/./b", "../../etc/passwd",
		"a//b", "/lead", "trail/", "//", "with space", "plus+sign", "q?x=1&y=2#frag",
		"semi;colon,comma", "tab\tnewline\n", "ünïcødé/日本語/🙂", "back\\slash", "%2E%2E",
		strings.Repeat("ü", fsm.MaxKeyBytes/2), // exactly 1 KiB of UTF-8
	}
	f := newFake("nft")
	c, _, _ := clientFor(t, Config{Backend: f})
	ctx := t.Context()
	for i, k := range keys {
		val := []byte(fmt.Sprintf("value-%d", i))
		if _, err := c.Put(ctx, "nft", k, val, api.PutOptions{}); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
		if _, found, _, _ := f.mem.Get(ctx, "nft", []byte(k), shard.Stale); !found {
			t.Fatalf("put %q stored another key", k)
		}
		got, _, err := c.Get(ctx, "nft", k, api.GetOptions{})
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("get %q = %q, %v; want %q", k, got, err, val)
		}
	}
	l, err := c.List(ctx, "nft", "", "", 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != len(keys) {
		t.Fatalf("listed %d keys, want %d", len(l.Items), len(keys))
	}
	for _, k := range keys {
		if _, err := c.Delete(ctx, "nft", k, api.DeleteOptions{}); err != nil {
			t.Fatalf("delete %q: %v", k, err)
		}
	}
	if l, _ := c.List(ctx, "nft", "", "", 1000, ""); len(l.Items) != 0 {
		t.Fatalf("after deleting every key, %d remain: %+v", len(l.Items), l.Items)
	}
}

// TestRawDotSegments: a raw path that Go's mux would clean is taken as is.
func TestRawDotSegments(t *testing.T) {
	f := newFake("nft")
	_, hs := testServer(t, Config{Backend: f})
	for _, raw := range []string{"a/../b", "a//b", "./x", "%2e%2e/y"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "PUT /v1/channels/nft/kv/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv", raw)
		b, _ := io.ReadAll(conn)
		conn.Close()
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
			t.Fatalf("PUT %s: %s", raw, b)
		}
		want, _ := api.UnescapeKey(raw)
		if _, found, _, _ := f.mem.Get(t.Context(), "nft", []byte(want), shard.Stale); !found {
			t.Errorf("raw path %q did not store key %q", raw, want)
		}
	}
}

func TestKV(t *testing.T) {
	f := newFake("nft")
	f.mem.LagValue = 1500 * time.Millisecond
	c, _, base := clientFor(t, Config{Backend: f})
	ctx := t.Context()

	idx, err := c.Put(ctx, "nft", "items/1", []byte("one"), api.PutOptions{CAS: u64(0)})
	if err != nil || idx != 1 {
		t.Fatalf("create-only put: %d %v", idx, err)
	}
	if _, err := c.Put(ctx, "nft", "items/1", []byte("again"), api.PutOptions{CAS: u64(0)}); !api.IsCASMismatch(err) || !api.IsConflict(err) {
		t.Fatalf("second create-only put: %v, want cas_mismatch", err)
	}
	if idx, err = c.Put(ctx, "nft", "items/1", []byte("uno"), api.PutOptions{CAS: u64(1)}); err != nil || idx != 3 {
		t.Fatalf("cas put: %d %v", idx, err)
	}
	empty, err := c.Put(ctx, "nft", "empty", nil, api.PutOptions{})
	if err != nil {
		t.Fatalf("put of an empty value: %v", err)
	}
	max := bytes.Repeat([]byte{0xff}, fsm.MaxValueBytes)
	if _, err := c.Put(ctx, "nft", "max", max, api.PutOptions{}); err != nil {
		t.Fatalf("put of exactly 1 MiB: %v", err)
	}
	if _, err := c.Put(ctx, "nft", "max", append(max, 0), api.PutOptions{}); !api.IsTooLarge(err) {
		t.Fatalf("put of 1 MiB + 1: %v, want 413", err)
	}
	if v, _, err := c.Get(ctx, "nft", "max", api.GetOptions{}); err != nil || !bytes.Equal(v, max) {
		t.Fatalf("get of 1 MiB: %d bytes, %v", len(v), err)
	}

	// GET: raw bytes and both indexes; reads never propose.
	proposals := f.proposals.Load()
	resp := do(t, base, "GET", "/v1/channels/nft/kv/items/1", nil, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "uno" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("get: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get(api.HeaderIndex) != "3" || resp.Header.Get(api.HeaderCreateIndex) != "1" {
		t.Errorf("get indexes %q/%q, want 3/1", resp.Header.Get(api.HeaderIndex), resp.Header.Get(api.HeaderCreateIndex))
	}
	if resp.Header.Get(api.HeaderLag) != "" {
		t.Errorf("a linearizable read carries X-Shardnet-Lag")
	}
	if v, idx, err := c.Get(ctx, "nft", "empty", api.GetOptions{}); err != nil || len(v) != 0 || idx != empty {
		t.Fatalf("get of the empty value: %q %d %v", v, idx, err)
	}
	for _, cons := range []struct {
		c    api.Consistency
		want shard.ReadLevel
	}{{"", shard.Linearizable}, {api.Linearizable, shard.Linearizable}, {api.Lease, shard.Lease}, {api.Stale, shard.Stale}} {
		if _, _, err := c.Get(ctx, "nft", "items/1", api.GetOptions{Consistency: cons.c}); err != nil {
			t.Fatalf("get at %q: %v", cons.c, err)
		}
		if got := shard.ReadLevel(f.lastLevel.Load()); got != cons.want {
			t.Errorf("consistency %q read at level %v, want %v", cons.c, got, cons.want)
		}
	}
	resp = do(t, base, "GET", "/v1/channels/nft/kv/items/1?consistency=stale", nil, nil)
	if got := resp.Header.Get(api.HeaderLag); got != "1500" {
		t.Errorf("stale read X-Shardnet-Lag %q, want 1500", got)
	}
	resp = do(t, base, "HEAD", "/v1/channels/nft/kv/items/1", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get(api.HeaderIndex) != "3" {
		t.Errorf("HEAD: %d, index %q", resp.StatusCode, resp.Header.Get(api.HeaderIndex))
	}
	if f.proposals.Load() != proposals {
		t.Fatalf("reads proposed %d commands", f.proposals.Load()-proposals)
	}

	// Delete with CAS.
	if _, err := c.Delete(ctx, "nft", "items/1", api.DeleteOptions{CAS: u64(1)}); !api.IsCASMismatch(err) {
		t.Fatalf("delete with a stale cas: %v", err)
	}
	if _, err := c.Delete(ctx, "nft", "items/1", api.DeleteOptions{CAS: u64(3)}); err != nil {
		t.Fatalf("delete with cas: %v", err)
	}
	_, _, err = c.Get(ctx, "nft", "items/1", api.GetOptions{})
	if e := api.AsError(err); e == nil || e.Code != api.CodeKeyNotFound || e.Index == 0 {
		t.Fatalf("get after delete: %v (index %v), want key_not_found with the applied index", err, e)
	}
}

func TestListPaging(t *testing.T) {
	f := newFake("nft")
	c, _, base := clientFor(t, Config{Backend: f})
	ctx := t.Context()
	for i := 0; i < 25; i++ {
		if _, err := c.Put(ctx, "nft", fmt.Sprintf("p/%02d", i), []byte{byte(i)}, api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, "nft", "q/other", []byte("x"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("the cursor does not advance")
		}
		l, err := c.List(ctx, "nft", "p/", after, 10, "")
		if err != nil {
			t.Fatal(err)
		}
		if l.Index != 26 {
			t.Errorf("list index %d, want 26", l.Index)
		}
		for _, it := range l.Items {
			got = append(got, it.Key)
			if it.CreateIndex == 0 || it.ModifyIndex == 0 || len(it.Value) != 1 {
				t.Errorf("item %+v lacks indexes or value", it)
			}
		}
		if l.Next == "" {
			break
		}
		after = l.Next
	}
	if len(got) != 25 || got[0] != "p/00" || got[24] != "p/24" {
		t.Fatalf("paged %d keys: %v", len(got), got)
	}
	resp := do(t, base, "GET", "/v1/channels/nft/kv/?prefix=q/", nil, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get(api.HeaderIndex) != "26" || !strings.Contains(string(b), `"value":"eA=="`) || !strings.Contains(string(b), `"next":""`) {
		t.Errorf("list answer: %s (index %q)", b, resp.Header.Get(api.HeaderIndex))
	}
	// kv without the trailing slash lists too; the default limit is 100.
	resp = do(t, base, "GET", "/v1/channels/nft/kv", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET .../kv: %d", resp.StatusCode)
	}
	var lim int
	f.list = func(_ context.Context, _ string, _, _ []byte, limit int, _ shard.ReadLevel) ([]fsm.Entry, bool, uint64, error) {
		lim = limit
		return nil, false, 0, nil
	}
	do(t, base, "GET", "/v1/channels/nft/kv/", nil, nil)
	if lim != DefaultListLimit {
		t.Errorf("default limit %d, want %d", lim, DefaultListLimit)
	}
}

func TestTxn(t *testing.T) {
	f := newFake("nft")
	c, _, _ := clientFor(t, Config{Backend: f})
	ctx := t.Context()
	if _, err := c.Put(ctx, "nft", "balance", []byte("10"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	req := api.TxnRequest{
		Compares: []api.Compare{
			{Key: "balance", Target: api.TargetValue, Result: api.Equal, Value: []byte("10")},
			{Key: "lock", Target: api.TargetCreateIndex, Result: api.Equal, Index: 0},
		},
		Success: []api.TxnOp{
			{Op: api.OpPut, Key: "balance", Value: []byte("7")},
			{Op: api.OpPut, Key: "lock", Value: []byte("held")},
			{Op: api.OpGet, Key: "balance"},
		},
		Failure: []api.TxnOp{{Op: api.OpGet, Key: "balance"}},
	}
	r, err := c.Txn(ctx, "nft", req)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Succeeded || r.Index != 2 || len(r.Results) != 3 {
		t.Fatalf("txn: %+v", r)
	}
	if g := r.Results[2]; g.Op != api.OpGet || !g.Found || string(g.Value) != "7" || g.ModifyIndex != 2 || g.CreateIndex != 1 {
		t.Errorf("get inside the txn: %+v", g)
	}
	// The same txn now fails its compares: 200, succeeded false, failure ops ran.
	r, err = c.Txn(ctx, "nft", req)
	if err != nil {
		t.Fatalf("failed compares are not an error: %v", err)
	}
	if r.Succeeded || len(r.Results) != 1 || string(r.Results[0].Value) != "7" {
		t.Fatalf("failing txn: %+v", r)
	}
}

func TestChannels(t *testing.T) {
	f := newFake()
	c, _, base := clientFor(t, Config{Backend: f})
	ctx := t.Context()
	var got api.CreateChannelRequest
	f.createChannel = func(ctx context.Context, req api.CreateChannelRequest) (api.Channel, error) {
		got = req
		return f.mem.CreateChannel(ctx, api.CreateChannelRequest{Name: req.Name, Replicas: 1})
	}
	resp := do(t, base, "POST", "/v1/channels", []byte(`{"name":"nft"}`), nil)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	if got.Replicas != DefaultReplicas {
		t.Errorf("omitted replicas became %d, want %d", got.Replicas, DefaultReplicas)
	}
	do(t, base, "POST", "/v1/channels", []byte(`{"name":"pinned","nodes":["n1","n2"]}`), nil)
	if got.Replicas != 2 {
		t.Errorf("two pinned nodes gave %d replicas, want 2", got.Replicas)
	}
	f.createChannel = nil
	if _, err := c.CreateChannel(ctx, api.CreateChannelRequest{Name: "nft", Replicas: 1}); !api.IsConflict(err) || api.AsError(err).Code != api.CodeChannelExists {
		t.Fatalf("duplicate: %v, want 409 channel_exists", err)
	}
	_, err := c.CreateChannel(ctx, api.CreateChannelRequest{Name: "big", Replicas: 5})
	if e := api.AsError(err); e == nil || e.Status != 409 || e.Code != api.CodeNotEnoughNodes || !strings.Contains(e.Message, "eligible") {
		t.Fatalf("too many replicas: %v, want 409 not_enough_nodes saying so", err)
	}
	ch, err := c.Channel(ctx, "nft")
	if err != nil || ch.Name != "nft" || ch.Leader == "" || len(ch.Placement) != 1 || len(ch.Voters) != 1 {
		t.Fatalf("channel: %+v %v", ch, err)
	}
	chs, err := c.Channels(ctx)
	if err != nil || len(chs) != 2 {
		t.Fatalf("channels: %d %v", len(chs), err)
	}
	if err := c.DeleteChannel(ctx, "nft"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Channel(ctx, "nft"); !api.IsNotFound(err) {
		t.Fatalf("deleted channel: %v", err)
	}
	if err := c.DeleteChannel(ctx, "nft"); api.AsError(err) == nil || api.AsError(err).Code != api.CodeChannelNotFound {
		t.Fatalf("delete of a missing channel: %v", err)
	}
	if ns, err := c.Nodes(ctx); err != nil || len(ns) != 1 || ns[0].ID == "" {
		t.Fatalf("nodes: %+v %v", ns, err)
	}
	if st, err := c.Status(ctx); err != nil || st.NodeID == "" {
		t.Fatalf("status: %+v %v", st, err)
	}
}

func TestMetrics(t *testing.T) {
	f := newFake("nft")
	c, s, base := clientFor(t, Config{Backend: f})
	for i := 0; i < 3; i++ {
		if _, err := c.Put(t.Context(), "nft", fmt.Sprintf("k/%d", i), []byte("v"), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.Get(t.Context(), "nft", "nope", api.GetOptions{})
	labels := map[string]string{"method": "PUT", "route": routeKV, "code": "200"}
	if got := metricValue(s.reg, "shardnet_http_requests_total", labels); got != 3 {
		t.Errorf("requests_total%v = %v, want 3", labels, got)
	}
	labels = map[string]string{"method": "GET", "route": routeKV, "code": "404"}
	if got := metricValue(s.reg, "shardnet_http_requests_total", labels); got != 1 {
		t.Errorf("requests_total%v = %v, want 1", labels, got)
	}
	resp := do(t, base, "GET", "/metrics", nil, nil)
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`shardnet_http_requests_total{code="200",method="PUT",route="/v1/channels/{ch}/kv/{key}"} 3`,
		`shardnet_http_request_seconds_bucket{route="/v1/channels/{ch}/kv/{key}"`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(b), "k/0") {
		t.Errorf("/metrics carries a real path")
	}
}

func TestHeadlessRoutes(t *testing.T) {
	_, hs := testServer(t, Config{Backend: newFake()})
	resp := do(t, hs.URL, "GET", "/", nil, nil)
	if resp.StatusCode != http.StatusNotFound || errorBody(t, resp).Code != api.CodeNotFound {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
}
