package main

import (
	"strings"
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
