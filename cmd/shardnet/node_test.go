package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestNodeCommands(t *testing.T) {
	_, addr := testNode(t, "", "nft")
	env := map[string]string{"SHARDNET_ADDR": addr}

	r := shardnet(t, env, "", "node", "get", "node-1")
	expect(t, r, 0, "Replicas left:")
	if !strings.Contains(r.out, "nft") {
		t.Fatalf("node get: %s", r.out)
	}
	r = shardnet(t, env, "", "node", "get", "nope")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(node_not_found, HTTP 404)") {
		t.Fatalf("unknown node: %q", r.err)
	}
	// A node holding a channel is refused leave and removal, with why.
	r = shardnet(t, env, "", "node", "leave")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "still holds 1 replicas") || !strings.Contains(r.err, "(node_state, HTTP 409)") {
		t.Fatalf("leave: %q", r.err)
	}
	r = shardnet(t, env, "", "node", "remove", "node-1")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(node_state, HTTP 409)") {
		t.Fatalf("remove: %q", r.err)
	}
	// Drain without waiting, then cancel.
	r = shardnet(t, env, "", "node", "drain", "node-1", "-wait", "0")
	expect(t, r, 0, "draining")
	r = shardnet(t, env, "", "node", "drain", "node-1", "-cancel")
	expect(t, r, 0, "State:")
	if strings.Contains(r.out, "draining") {
		t.Fatalf("after cancel: %s", r.out)
	}
	r = shardnet(t, env, "", "node")
	expect(t, r, 2, "")
}

// `node leave` sends a leave again after an answer that says it may (503
// not_ready, 503 timeout), and stops at once on any other refusal.
func TestNodeLeaveSendsAgain(t *testing.T) {
	var calls atomic.Int32
	answers := []struct {
		status int
		body   string
	}{
		{503, `{"error":{"code":"not_ready","message":"the meta leader did not record node res-3 left in time"}}`},
		{503, `{"error":{"code":"timeout","message":"context deadline exceeded"}}`},
		{200, `{"id":"res-3","state":"leaving"}`},
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/nodes/res-3/leave" {
			http.Error(w, "unexpected", http.StatusTeapot)
			return
		}
		a := answers[min(int(calls.Add(1))-1, len(answers)-1)]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	}))
	defer hs.Close()
	env := map[string]string{"SHARDNET_ADDR": hs.URL}
	r := shardnet(t, env, "", "node", "leave", "res-3")
	expect(t, r, 0, "Node res-3 is leaving.")
	if calls.Load() != 3 || strings.Count(r.err, "sending the leave again") != 2 {
		t.Fatalf("%d calls, stderr %q; want 3 calls, 2 said", calls.Load(), r.err)
	}

	calls.Store(0)
	answers[0] = struct {
		status int
		body   string
	}{409, `{"error":{"code":"node_state","message":"node res-3 still holds 1 replicas"}}`}
	r = shardnet(t, env, "", "node", "leave", "res-3")
	expect(t, r, 1, "")
	if calls.Load() != 1 || !strings.Contains(r.err, "node_state") {
		t.Fatalf("a refusal: %d calls, stderr %q; want 1 call and the refusal", calls.Load(), r.err)
	}
}
