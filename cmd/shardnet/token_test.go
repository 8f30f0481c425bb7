package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// The token commands issue, list and revoke a channel's tokens, sign
// links that work without a header, and set public prefixes.
func TestChannelTokenCommands(t *testing.T) {
	_, addr := testNode(t, "op", "nft")
	op := map[string]string{"SHARDNET_ADDR": addr, "SHARDNET_TOKEN": "op"}
	r := shardnet(t, op, "", "channel", "token", "create", "nft", "-scope", "read-write", "-ttl", "1h")
	expect(t, r, 0, "Scope:   read-write")
	tok := regexp.MustCompile(`Token:   (snc_\S+)`).FindStringSubmatch(r.out)
	id := regexp.MustCompile(`ID:      (\S+)`).FindStringSubmatch(r.out)
	if tok == nil || id == nil {
		t.Fatalf("no token in %q", r.out)
	}
	rw := map[string]string{"SHARDNET_ADDR": addr, "SHARDNET_TOKEN": tok[1]}
	expect(t, shardnet(t, rw, "", "kv", "put", "nft", "pub/a", "hello"), 0, "")
	r = shardnet(t, rw, "", "channel", "sign", "nft", "pub/a", "-ttl", "10m")
	expect(t, r, 0, addr+"/v1/channels/nft/kv/pub/a?exp=")
	resp, err := http.Get(strings.TrimSpace(r.out))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "hello" {
		t.Fatalf("the signed link answered %d %q", resp.StatusCode, b)
	}
	expect(t, shardnet(t, rw, "", "channel", "token", "list", "nft"), 0, id[1])
	expect(t, shardnet(t, rw, "", "channel", "settings", "nft", "-public-prefixes", "pub/"), 0, "Public prefixes: pub/")
	expect(t, shardnet(t, op, "", "channel", "get", "nft"), 0, "Public:")
	expect(t, shardnet(t, op, "", "channel", "token", "revoke", "nft", id[1]), 0, "revoked")
	r = shardnet(t, rw, "", "kv", "get", "nft", "pub/a")
	if r.code != 1 || !strings.Contains(r.err, "HTTP 401") {
		t.Fatalf("a revoked token: exit %d, %q", r.code, r.err)
	}
	expect(t, shardnet(t, map[string]string{"SHARDNET_ADDR": addr}, "", "kv", "get", "nft", "pub/a"), 0, "hello")
}
