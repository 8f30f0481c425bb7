package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// fsmBackend is a fake whose proposals are applied by a real channel state
// machine, one log index each: the server's keyed writes meet the records
// of fsm/idem.go. clusterVersion, when set, refuses what it does not run as
// shard.Replica.Propose does.
type fsmBackend struct {
	*fakeBackend
	ch *fsm.Channel

	mu             sync.Mutex
	index          uint64
	clusterVersion int
	// lose, when set, is called after an apply and may replace its answer
	// (an answer lost after the write was applied).
	lose func(res *fsm.Result) error
}

func newFSMBackend(t *testing.T) *fsmBackend {
	t.Helper()
	st, err := fsm.OpenStore(t.TempDir(), fsm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ch, err := st.Channel(1)
	if err != nil {
		t.Fatal(err)
	}
	b := &fsmBackend{fakeBackend: newFake("nft"), ch: ch}
	b.propose = func(_ context.Context, _ string, cmd []byte) (*fsm.Result, error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.clusterVersion > 0 {
			if err := fsm.CheckVersion(fsm.EntryVersion(cmd), b.clusterVersion); err != nil {
				return nil, fmt.Errorf("shard: %w", err)
			}
		}
		b.index++
		res := ch.Apply(&raft.Log{Index: b.index, Term: 1, Type: raft.LogCommand, Data: cmd}).(*fsm.Result)
		if b.lose != nil {
			if err := b.lose(res); err != nil {
				return nil, err
			}
		}
		return res, nil
	}
	return b
}

func (b *fsmBackend) entry(t *testing.T, key string) fsm.Entry {
	t.Helper()
	e, _, err := b.ch.Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func keyHdr(key string, more ...string) http.Header {
	h := http.Header{api.HeaderIdempotencyKey: {key}}
	for i := 0; i+1 < len(more); i += 2 {
		h.Set(more[i], more[i+1])
	}
	return h
}

func TestIdempotencyKeyValidation(t *testing.T) {
	b := newFSMBackend(t)
	_, hs := testServer(t, Config{Backend: b})
	for name, h := range map[string]http.Header{
		"empty":       {api.HeaderIdempotencyKey: {""}},
		"twice":       {api.HeaderIdempotencyKey: {"a", "b"}},
		"too long":    keyHdr(strings.Repeat("k", fsm.MaxIdemKeyBytes+1)),
		"inner space": keyHdr("a b"),
		"control":     keyHdr("a\tb"),
		"not ASCII":   keyHdr("clé"),
	} {
		for _, w := range []struct{ method, path, body string }{
			{"PUT", "/v1/channels/nft/kv/a", "v"},
			{"DELETE", "/v1/channels/nft/kv/a", ""},
			{"POST", "/v1/channels/nft/txn", `{"success":[{"op":"get","key":"a"}]}`},
		} {
			resp := do(t, hs.URL, w.method, w.path, []byte(w.body), h)
			if e := errorBody(t, resp); resp.StatusCode != 400 || e.Code != api.CodeBadRequest || !strings.Contains(e.Message, api.HeaderIdempotencyKey) {
				t.Errorf("%s, %s: %d %+v, want 400 invalid_request naming the header", name, w.method, resp.StatusCode, e)
			}
		}
	}
	if n := b.proposals.Load(); n != 0 {
		t.Fatalf("%d proposals for refused keys", n)
	}
	// The longest key is fine.
	resp := do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a", []byte("v"), keyHdr(strings.Repeat("~", fsm.MaxIdemKeyBytes)))
	if resp.StatusCode != 200 {
		t.Fatalf("a key of %d bytes: %d %s", fsm.MaxIdemKeyBytes, resp.StatusCode, readAll(t, resp))
	}
}

// TestIdempotentRetryOverHTTP: a retry under the same key answers the
// first attempt's status, body and index and applies nothing; another
// request under it is 422.
func TestIdempotentRetryOverHTTP(t *testing.T) {
	b := newFSMBackend(t)
	_, hs := testServer(t, Config{Backend: b})
	answer := func(resp *http.Response) string {
		return fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get(api.HeaderIndex), readAll(t, resp))
	}

	first := answer(do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b?cas=0", []byte("1"), keyHdr("k1")))
	// The same request, the key spelled another way.
	retry := answer(do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a%2Fb?cas=0", []byte("1"), keyHdr("k1")))
	if first != retry || !strings.HasPrefix(first, "200 1 ") {
		t.Fatalf("first %q, retry %q; want the same 200 at index 1", first, retry)
	}
	if e := b.entry(t, "a/b"); e.ModifyIndex != 1 {
		t.Fatalf("a/b = %+v, want written once at 1", e)
	}

	// Another value under the key: 422, nothing applied.
	resp := do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b?cas=0", []byte("2"), keyHdr("k1"))
	if e := errorBody(t, resp); resp.StatusCode != 422 || e.Code != api.CodeIdempotencyKeyReused || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("reused key: %d %+v, want 422 idempotency_key_reused", resp.StatusCode, e)
	}
	// So is another method, or another cas.
	if resp := do(t, hs.URL, "DELETE", "/v1/channels/nft/kv/a/b?cas=0", nil, keyHdr("k1")); resp.StatusCode != 422 {
		t.Fatalf("reused key on a delete: %d", resp.StatusCode)
	}
	if resp := do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b", []byte("1"), keyHdr("k1")); resp.StatusCode != 422 {
		t.Fatalf("reused key without the cas: %d", resp.StatusCode)
	}
	if e := b.entry(t, "a/b"); string(e.Value) != "1" || e.ModifyIndex != 1 {
		t.Fatalf("a/b = %+v after refused reuses", e)
	}

	// A CAS mismatch is an outcome: its retry answers the same 409.
	mm := answer(do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b?cas=77", []byte("x"), keyHdr("k2")))
	do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b", []byte("moved"), nil)
	mm2 := answer(do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b?cas=77", []byte("x"), keyHdr("k2")))
	if mm != mm2 || !strings.HasPrefix(mm, "409 ") {
		t.Fatalf("cas mismatch %q, retry %q", mm, mm2)
	}

	// A txn: the retry's body is the first's, JSON spacing aside.
	tx := `{"compares":[{"key":"a/b","target":"value","result":"equal","value":"bW92ZWQ="}],"success":[{"op":"put","key":"c","value":"MQ=="},{"op":"get","key":"a/b"}]}`
	t1 := answer(do(t, hs.URL, "POST", "/v1/channels/nft/txn", []byte(tx), keyHdr("k3")))
	do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a/b", []byte("later"), nil)
	t2 := answer(do(t, hs.URL, "POST", "/v1/channels/nft/txn", []byte(" "+strings.ReplaceAll(tx, ",", ", ")), keyHdr("k3")))
	if t1 != t2 || !strings.Contains(t1, `"succeeded":true`) {
		t.Fatalf("txn %q, retry %q", t1, t2)
	}
	if e := b.entry(t, "c"); e.ModifyIndex == 0 || e.ModifyIndex != e.CreateIndex {
		t.Fatalf("c = %+v, want written once", e)
	}

	// Keys are per bearer token: another token's k1 is its own.
	other := answer(do(t, hs.URL, "PUT", "/v1/channels/nft/kv/z?cas=0", []byte("1"), keyHdr("k1", "Authorization", "Bearer someone-else")))
	if !strings.HasPrefix(other, "200 ") {
		t.Fatalf("k1 under another token: %q, want its own write", other)
	}
}

// TestClientRetriesUnderOneKey: the Go client's writes carry a key of its
// own; a retry after a lost answer carries the same one and gets the
// original answer, and a cluster that does not run keyed writes yet gets
// the write once more without the key.
func TestClientRetriesUnderOneKey(t *testing.T) {
	b := newFSMBackend(t)
	c, _, _ := clientFor(t, Config{Backend: b})
	ctx := t.Context()
	// Two writes without a key of the caller's: two keys, two writes.
	i1, err1 := c.Put(ctx, "nft", "a", []byte("1"), api.PutOptions{})
	i2, err2 := c.Put(ctx, "nft", "a", []byte("1"), api.PutOptions{})
	if err1 != nil || err2 != nil || i1 == i2 {
		t.Fatalf("two puts: %d %v, %d %v; want two writes", i1, err1, i2, err2)
	}

	// The first answer is lost after the write was applied: without
	// retries the caller sees outcome_unknown; with them, the write's own
	// index, and it was applied once.
	lost := 0
	b.mu.Lock()
	b.lose = func(res *fsm.Result) error {
		if lost++; lost == 1 {
			return fmt.Errorf("%w: the answer was lost", shard.ErrOutcomeUnknown)
		}
		return nil
	}
	b.mu.Unlock()
	cas := i2
	if _, err := c.Put(ctx, "nft", "a", []byte("2"), api.PutOptions{CAS: &cas}); !api.IsOutcomeUnknown(err) {
		t.Fatalf("put without retries: %v, want outcome_unknown", err)
	}
	applied := b.entry(t, "a").ModifyIndex
	b.mu.Lock()
	lost = 0
	b.mu.Unlock()
	cas = applied
	idx, err := c.WithRetries(2, 1).Put(ctx, "nft", "a", []byte("3"), api.PutOptions{CAS: &cas})
	if err != nil {
		t.Fatalf("put with retries: %v (a retry without the key would be a cas mismatch)", err)
	}
	b.mu.Lock()
	logIndex := b.index
	b.mu.Unlock()
	if e := b.entry(t, "a"); e.ModifyIndex != idx || string(e.Value) != "3" || logIndex != idx+1 {
		t.Fatalf("a = %+v, index %d, log at %d: want written once at %d and the retry answered from its record", e, idx, logIndex, idx)
	}

	// The caller's own key, across two clients.
	kctx := api.WithIdempotencyKey(ctx, "order-42")
	r1, err1 := c.Txn(kctx, "nft", api.TxnRequest{Success: []api.TxnOp{{Op: api.OpPut, Key: "t", Value: []byte("1")}}})
	r2, err2 := c.WithRetries(1, 1).Txn(kctx, "nft", api.TxnRequest{Success: []api.TxnOp{{Op: api.OpPut, Key: "t", Value: []byte("1")}}})
	if err1 != nil || err2 != nil || r1.Index != r2.Index {
		t.Fatalf("txn under one key: %+v %v, %+v %v", r1, err1, r2, err2)
	}
	_, err = c.Delete(kctx, "nft", "t", api.DeleteOptions{})
	if e := api.AsError(err); e == nil || e.Status != 422 || e.Code != api.CodeIdempotencyKeyReused {
		t.Fatalf("another write under the key: %v, want 422", err)
	}

	// A cluster of version 2: the client's own key is dropped, the
	// caller's is not.
	b.mu.Lock()
	b.lose = nil
	b.clusterVersion = 2
	b.mu.Unlock()
	if _, err := c.Put(ctx, "nft", "old", []byte("1"), api.PutOptions{}); err != nil {
		t.Fatalf("put to a version 2 cluster: %v", err)
	}
	_, err = c.Put(kctx, "nft", "old", []byte("1"), api.PutOptions{})
	if e := api.AsError(err); e == nil || e.Code != api.CodeUpgradePending {
		t.Fatalf("keyed put to a version 2 cluster: %v, want 409 upgrade_pending", err)
	}
}

// TestForwardDoesNotResendAKeyedWrite: net/http's transport resends a
// request that carries Idempotency-Key when a reused connection breaks
// after it was sent; a write forwarded (to a node of the previous version,
// the one road left for whole HTTP requests) must not be resent by the node
// (docs/design.md "D3"), keyed or not: only the client retries.
func TestForwardDoesNotResendAKeyedWrite(t *testing.T) {
	a, b := startNode(t, "a", "", "nft"), startNode(t, "b", "", "nft")
	link(t, a, b)
	a.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return nil, oldNode(b, shard.ErrNotLeader)
	}
	// A first forward leaves an idle connection from a to b.
	if _, err := a.client.Put(t.Context(), "nft", "warm", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int32
	var keys []string
	var mu sync.Mutex
	b.f.propose = func(_ context.Context, _ string, cmd []byte) (*fsm.Result, error) {
		got.Add(1)
		if c, err := fsm.Decode(cmd); err == nil {
			if k, ok := c.(*fsm.Idempotent); ok {
				mu.Lock()
				keys = append(keys, string(k.Key))
				mu.Unlock()
			}
		}
		panic(http.ErrAbortHandler) // the leader's answer is lost
	}
	ctx := api.WithIdempotencyKey(t.Context(), "k")
	_, err := a.client.Put(ctx, "nft", "k", []byte("v"), api.PutOptions{})
	if !api.IsOutcomeUnknown(err) {
		t.Fatalf("lost forward: %v, want outcome_unknown", err)
	}
	if n := got.Load(); n != 1 {
		t.Fatalf("the leader received the write %d times, want once", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 1 || keys[0] != "k" {
		t.Fatalf("the leader saw keys %q, want the client's", keys)
	}
}
