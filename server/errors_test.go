package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// TestErrorMapping: each error a backend may return answers its status,
// code and Retry-After, also when wrapped with context.
func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
		retry  bool
	}{
		{fsm.ErrCASMismatch, 409, api.CodeCASMismatch, false},
		{fsm.ErrKeyNotFound, 404, api.CodeKeyNotFound, false},
		{fsm.ErrInvalidKey, 400, api.CodeInvalidKey, false},
		{fsm.ErrKeyTooLarge, 400, api.CodeKeyTooLarge, false},
		{fsm.ErrValueLarge, 413, api.CodeValueTooLarge, false},
		{fsm.ErrTxnTooLarge, 413, api.CodeTxnTooLarge, false},
		{fsm.ErrInvalidCommand, 400, api.CodeBadRequest, false},
		{cluster.ErrChannelExists, 409, api.CodeChannelExists, false},
		{cluster.ErrNotEnoughNodes, 409, api.CodeNotEnoughNodes, false},
		{cluster.ErrChannelNotFound, 404, api.CodeChannelNotFound, false},
		{cluster.ErrNodeNotFound, 404, api.CodeNodeNotFound, false},
		{cluster.ErrInvalidRequest, 400, api.CodeBadRequest, false},
		{cluster.ErrNoMetaLeader, 503, api.CodeNoLeader, true},
		{shard.ErrNoLeader, 503, api.CodeNoLeader, true},
		{shard.ErrNotLeader, 503, api.CodeNoLeader, true},
		{shard.ErrNotHosted, 503, api.CodeNoLeader, true},
		{shard.ErrOutcomeUnknown, 503, api.CodeOutcomeUnknown, false},
		{fmt.Errorf("%w: %w", shard.ErrOutcomeUnknown, context.DeadlineExceeded), 503, api.CodeOutcomeUnknown, false},
		{shard.ErrOverloaded, 429, api.CodeOverloaded, true},
		{shard.ErrStopped, 503, api.CodeUnavailable, true},
		{shard.ErrReplicaCorrupt, 503, api.CodeReplicaCorrupt, true},
		{fmt.Errorf("shard: %w", fsm.CheckVersion(2, 1)), 409, api.CodeUpgradePending, false},
		{fsm.ErrClosed, 503, api.CodeUnavailable, true},
		{context.DeadlineExceeded, 503, api.CodeTimeout, false},
		{errors.New("disk on fire"), 500, api.CodeInternal, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			f := newFake("nft")
			f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
				return nil, fmt.Errorf("group 7: %w", tt.err)
			}
			_, hs := testServer(t, Config{Backend: f})
			resp := do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a", []byte("v"), nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if e := errorBody(t, resp); e.Code != tt.code || !strings.Contains(e.Message, tt.err.Error()) {
				t.Errorf("error %+v, want code %q and the cause in the message", e, tt.code)
			}
			if got := resp.Header.Get("Retry-After") != ""; got != tt.retry {
				t.Errorf("Retry-After present %v, want %v", got, tt.retry)
			}
		})
	}
}

// TestBusinessOutcomes: a CAS mismatch or a missing key decided by the FSM
// answers 409/404 with the entry's index.
func TestBusinessOutcomes(t *testing.T) {
	f := newFake("nft")
	_, hs := testServer(t, Config{Backend: f})
	if resp := do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a?cas=0", []byte("1"), nil); resp.StatusCode != 200 {
		t.Fatalf("create-only put: %d", resp.StatusCode)
	}
	resp := do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a?cas=0", []byte("2"), nil)
	if resp.StatusCode != 409 || errorBody(t, resp).Code != api.CodeCASMismatch {
		t.Fatalf("second create-only put: %d, want 409 cas_mismatch", resp.StatusCode)
	}
	if got := resp.Header.Get(api.HeaderIndex); got != "2" {
		t.Errorf("cas mismatch X-Shardnet-Index %q, want 2 (the refused entry)", got)
	}
	resp = do(t, hs.URL, "DELETE", "/v1/channels/nft/kv/missing", nil, nil)
	if resp.StatusCode != 404 || errorBody(t, resp).Code != api.CodeKeyNotFound {
		t.Fatalf("delete of a missing key: %d, want 404 key_not_found", resp.StatusCode)
	}
	resp = do(t, hs.URL, "GET", "/v1/channels/nft/kv/missing", nil, nil)
	if resp.StatusCode != 404 || errorBody(t, resp).Code != api.CodeKeyNotFound {
		t.Fatalf("get of a missing key: %d, want 404", resp.StatusCode)
	}
	if got := resp.Header.Get(api.HeaderIndex); got != "3" {
		t.Errorf("missing key X-Shardnet-Index %q, want the applied index 3", got)
	}
	// A result of a replica closed under the proposal: outcome unknown.
	f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return &fsm.Result{Index: 9, Err: fsm.ErrClosed}, nil
	}
	resp = do(t, hs.URL, "PUT", "/v1/channels/nft/kv/a", []byte("v"), nil)
	if resp.StatusCode != 503 || errorBody(t, resp).Code != api.CodeOutcomeUnknown || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("ErrClosed result: %d, want 503 outcome_unknown without Retry-After", resp.StatusCode)
	}
	f.propose = nil
	resp = do(t, hs.URL, "GET", "/v1/channels/other/kv/a", nil, nil)
	if resp.StatusCode != 404 || errorBody(t, resp).Code != api.CodeChannelNotFound {
		t.Fatalf("get in a missing channel: %d, want 404 channel_not_found", resp.StatusCode)
	}
}

// TestPanicIsJSON500: a panicking backend answers 500 JSON, and the server
// keeps serving.
func TestPanicIsJSON500(t *testing.T) {
	f := newFake("nft")
	f.status = func(context.Context) (api.Status, error) { panic("boom") }
	f.propose = func(context.Context, string, []byte) (*fsm.Result, error) { panic(errors.New("nil map")) }
	_, hs := testServer(t, Config{Backend: f})
	for _, req := range []struct{ method, path string }{{"GET", "/v1/status"}, {"PUT", "/v1/channels/nft/kv/a"}} {
		resp := do(t, hs.URL, req.method, req.path, []byte("v"), nil)
		if resp.StatusCode != 500 {
			t.Fatalf("%s %s: status %d, want 500", req.method, req.path, resp.StatusCode)
		}
		if e := errorBody(t, resp); e.Code != api.CodeInternal {
			t.Errorf("code %q, want internal", e.Code)
		}
	}
	if resp := do(t, hs.URL, "GET", "/v1/health", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("health after panics: %d", resp.StatusCode)
	}
}

func TestAuth(t *testing.T) {
	f := newFake("nft")
	_, hs := testServer(t, Config{Backend: f, Token: "s3cret"})
	bearer := func(v string) http.Header { return http.Header{"Authorization": {v}} }
	tests := []struct {
		name, method, path string
		hdr                http.Header
		status             int
	}{
		{"no token", "GET", "/v1/status", nil, 401},
		{"wrong token", "GET", "/v1/status", bearer("Bearer nope"), 401},
		{"token prefix", "GET", "/v1/status", bearer("Bearer s3cre"), 401},
		{"basic scheme", "GET", "/v1/status", bearer("Basic s3cret"), 401},
		{"bare token", "GET", "/v1/status", bearer("s3cret"), 401},
		{"right token", "GET", "/v1/status", bearer("Bearer s3cret"), 200},
		{"scheme is case-insensitive", "GET", "/v1/status", bearer("bearer s3cret"), 200},
		{"kv without token", "PUT", "/v1/channels/nft/kv/a", nil, 401},
		{"kv with token", "PUT", "/v1/channels/nft/kv/a", bearer("Bearer s3cret"), 200},
		{"unknown v1 route", "GET", "/v1/nope", nil, 401},
		{"refused before validation", "PUT", "/v1/channels/BAD/kv/a", nil, 401},
		{"metrics without token", "GET", "/metrics", nil, 401},
		{"metrics with token", "GET", "/metrics", bearer("Bearer s3cret"), 200},
		{"health is open", "GET", "/v1/health", nil, 200},
		{"readiness is open", "GET", "/v1/health?ready=1", nil, 200},
		{"health other methods are not", "POST", "/v1/health", nil, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.proposals.Load()
			resp := do(t, hs.URL, tt.method, tt.path, []byte("v"), tt.hdr)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 {
				if e := errorBody(t, resp); e.Code != api.CodeUnauthorized {
					t.Errorf("code %q", e.Code)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				if f.proposals.Load() != before {
					t.Errorf("an unauthorized write reached the backend")
				}
			}
		})
	}
	c := api.NewClient(hs.URL, "s3cret", hs.Client())
	if _, err := c.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatalf("client with token: %v", err)
	}
	if _, err := api.NewClient(hs.URL, "", hs.Client()).Status(t.Context()); !api.IsUnauthorized(err) {
		t.Fatalf("client without token: %v, want unauthorized", err)
	}
}

func TestHealth(t *testing.T) {
	f := newFake()
	var ready atomic.Pointer[error]
	notReady := errors.New("no meta leader yet")
	ready.Store(&notReady)
	f.ready = func(context.Context) error { return *ready.Load() }
	_, hs := testServer(t, Config{Backend: f})
	resp := do(t, hs.URL, "GET", "/v1/health", nil, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != `{"status":"ok"}` {
		t.Fatalf("liveness: %d %s", resp.StatusCode, b)
	}
	resp = do(t, hs.URL, "GET", "/v1/health?ready=1", nil, nil)
	if resp.StatusCode != 503 {
		t.Fatalf("readiness while not ready: %d, want 503", resp.StatusCode)
	}
	if e := errorBody(t, resp); e.Code != api.CodeNotReady || !strings.Contains(e.Message, "no meta leader yet") {
		t.Errorf("readiness error %+v", e)
	}
	var none error
	ready.Store(&none)
	if resp := do(t, hs.URL, "GET", "/v1/health?ready=1", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("readiness when ready: %d", resp.StatusCode)
	}
}
