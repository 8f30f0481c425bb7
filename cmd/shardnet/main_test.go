package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/server"
	"github.com/shardnet/shardnet/server/servertest"
)

// testNode serves the API over an in-memory backend.
func testNode(t *testing.T, token string, channels ...string) (*servertest.Memory, string) {
	t.Helper()
	mem := servertest.NewMemory(channels...)
	s := server.New(server.Config{Backend: mem, Token: token, Registry: prometheus.NewRegistry()})
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return mem, hs.URL
}

type result struct {
	out, err string
	code     int
}

// shardnet runs one command line in-process.
func shardnet(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{
		stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb,
		getenv: func(k string) string { return env[k] },
	}
	code := run(context.Background(), c, args)
	return result{out.String(), errb.String(), code}
}

func expect(t *testing.T, r result, code int, stdout string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.out, r.err)
	}
	if stdout != "" && !strings.Contains(r.out, stdout) {
		t.Fatalf("stdout %q does not contain %q (stderr %q)", r.out, stdout, r.err)
	}
}

func TestKVCommands(t *testing.T) {
	_, addr := testNode(t, "", "nft")
	env := map[string]string{"SHARDNET_ADDR": addr}

	expect(t, shardnet(t, env, "", "kv", "put", "nft", "items/1", "hello"), 0, "1\n")
	r := shardnet(t, env, "", "kv", "get", "nft", "items/1")
	expect(t, r, 0, "")
	if r.out != "hello" {
		t.Fatalf("kv get wrote %q, want the raw value", r.out)
	}
	// Flags before or after the arguments; the value from stdin.
	expect(t, shardnet(t, env, "from stdin\x00\xff", "kv", "put", "-cas", "0", "nft", "bin", "-"), 0, "2\n")
	if r := shardnet(t, env, "", "kv", "get", "nft", "bin", "-consistency=stale"); r.out != "from stdin\x00\xff" {
		t.Fatalf("binary value came back as %q", r.out)
	}
	// From a file.
	file := filepath.Join(t.TempDir(), "v")
	if err := os.WriteFile(file, []byte("file value"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, shardnet(t, env, "", "kv", "put", "nft", "f", "-file", file), 0, "3\n")
	// A key that looks like a flag, after --.
	expect(t, shardnet(t, env, "", "kv", "put", "nft", "--", "-dash", "v"), 0, "4\n")
	expect(t, shardnet(t, env, "", "kv", "get", "nft", "--", "-dash"), 0, "v")

	// CAS mismatch: the error line and exit 1.
	r = shardnet(t, env, "", "kv", "put", "nft", "items/1", "again", "-cas", "0")
	expect(t, r, 1, "")
	if !strings.HasPrefix(r.err, "Error: ") || !strings.Contains(r.err, "(cas_mismatch, HTTP 409)") {
		t.Fatalf("cas mismatch stderr %q", r.err)
	}

	// -json
	r = shardnet(t, env, "", "kv", "get", "-json", "nft", "items/1")
	var kv struct {
		Key         string `json:"key"`
		Value       []byte `json:"value"`
		ModifyIndex uint64 `json:"modify_index"`
	}
	if err := json.Unmarshal([]byte(r.out), &kv); err != nil || kv.Key != "items/1" || string(kv.Value) != "hello" || kv.ModifyIndex != 1 {
		t.Fatalf("kv get -json: %q (%v)", r.out, err)
	}

	// Blocking read that times out: the current value.
	expect(t, shardnet(t, env, "", "kv", "get", "nft", "items/1", "-index", "1", "-wait", "50ms"), 0, "hello")

	// ls: a table, all pages, -limit, -json.
	for _, k := range []string{"items/2", "items/3", "items/4"} {
		expect(t, shardnet(t, env, "", "kv", "put", "nft", k, "x"), 0, "")
	}
	r = shardnet(t, env, "", "kv", "ls", "nft", "-prefix", "items/")
	expect(t, r, 0, "KEY")
	if lines := strings.Split(strings.TrimSpace(r.out), "\n"); len(lines) != 5 || !strings.HasPrefix(lines[1], "items/1 ") {
		t.Fatalf("kv ls:\n%s", r.out)
	}
	r = shardnet(t, env, "", "kv", "ls", "nft", "-prefix", "items/", "-limit", "2", "-json")
	var l api.ListResponse
	if err := json.Unmarshal([]byte(r.out), &l); err != nil || len(l.Items) != 2 || l.Next != "items/2" {
		t.Fatalf("kv ls -limit 2 -json: %q (%v)", r.out, err)
	}

	// del, then get: 404 and exit 1.
	expect(t, shardnet(t, env, "", "kv", "del", "nft", "items/1", "-cas", "1"), 0, "")
	r = shardnet(t, env, "", "kv", "get", "nft", "items/1")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(key_not_found, HTTP 404)") {
		t.Fatalf("get of a deleted key: %q", r.err)
	}

	// txn from stdin.
	txn := `{"compares":[{"key":"items/2","target":"value","result":"equal","value":"eA=="}],
		"success":[{"op":"put","key":"items/2","value":"eQ=="},{"op":"get","key":"items/2"}]}`
	r = shardnet(t, env, txn, "kv", "txn", "nft")
	var tr api.TxnResponse
	if err := json.Unmarshal([]byte(r.out), &tr); err != nil || !tr.Succeeded || len(tr.Results) != 2 || string(tr.Results[1].Value) != "y" {
		t.Fatalf("kv txn: %q %q (%v)", r.out, r.err, err)
	}
	expect(t, shardnet(t, env, "{", "kv", "txn", "nft"), 2, "")
}

// TestKVIdempotencyKey: a write sent again under the same -idempotency-key
// prints the first write's index and applies nothing; another write under
// the key is refused.
func TestKVIdempotencyKey(t *testing.T) {
	_, addr := testNode(t, "", "nft")
	env := map[string]string{"SHARDNET_ADDR": addr}
	expect(t, shardnet(t, env, "", "kv", "put", "-idempotency-key", "k-1", "-cas", "0", "nft", "a", "v"), 0, "1\n")
	expect(t, shardnet(t, env, "", "kv", "put", "-idempotency-key", "k-1", "-cas", "0", "nft", "a", "v"), 0, "1\n")
	expect(t, shardnet(t, env, "", "kv", "put", "nft", "b", "v"), 0, "3\n")
	r := shardnet(t, env, "", "kv", "del", "-idempotency-key", "k-1", "nft", "a")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(idempotency_key_reused, HTTP 422)") {
		t.Fatalf("reused key stderr %q", r.err)
	}
	r = shardnet(t, env, "", "kv", "put", "-idempotency-key", "not ok", "nft", "a", "v")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "invalid_request, HTTP 400") {
		t.Fatalf("bad key stderr %q", r.err)
	}
}

func TestAddrAndToken(t *testing.T) {
	_, addr := testNode(t, "s3cret", "nft")
	_, other := testNode(t, "", "nft")

	r := shardnet(t, map[string]string{"SHARDNET_ADDR": addr}, "", "kv", "put", "nft", "k", "v")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(unauthorized, HTTP 401)") {
		t.Fatalf("without a token: %q", r.err)
	}
	expect(t, shardnet(t, map[string]string{"SHARDNET_ADDR": addr, "SHARDNET_TOKEN": "s3cret"}, "", "kv", "put", "nft", "k", "v"), 0, "1\n")
	// -token overrides the environment, -addr too.
	expect(t, shardnet(t, map[string]string{"SHARDNET_ADDR": addr, "SHARDNET_TOKEN": "wrong"}, "", "kv", "get", "-token", "s3cret", "nft", "k"), 0, "v")
	expect(t, shardnet(t, map[string]string{"SHARDNET_ADDR": addr}, "", "kv", "put", "-addr", other, "nft", "k", "w"), 0, "1\n")
	// An address without a scheme is plain HTTP.
	expect(t, shardnet(t, nil, "", "status", "-addr", strings.TrimPrefix(other, "http://")), 0, "node-1")
	expect(t, shardnet(t, nil, "", "status", "-addr", strings.TrimPrefix(other, "http://")), 0, fmt.Sprintf("Cluster version:  %d (this node supports %d)", fsm.Version, fsm.Version))
	// Nothing listening: a plain error, exit 1.
	r = shardnet(t, nil, "", "status", "-addr", "127.0.0.1:1")
	expect(t, r, 1, "")
	if !strings.HasPrefix(r.err, "Error: ") {
		t.Fatalf("connection refused: %q", r.err)
	}
}

func TestChannelAndMembers(t *testing.T) {
	mem, addr := testNode(t, "")
	mem.ElectAfterReads = 2 // create's answer and two reads show no leader yet
	env := map[string]string{"SHARDNET_ADDR": addr}

	r := shardnet(t, env, "", "channel", "create", "nft", "--replicas", "1")
	expect(t, r, 0, "Name:")
	// create waits for the first leader (-wait) before it prints.
	if !regexp.MustCompile(`Leader:\s+node-1\n`).MatchString(r.out) || !strings.Contains(r.out, "APPLIED") {
		t.Fatalf("channel create printed:\n%s", r.out)
	}
	r = shardnet(t, env, "", "channel", "create", "nft", "-replicas", "1")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(channel_exists, HTTP 409)") {
		t.Fatalf("duplicate: %q", r.err)
	}
	r = shardnet(t, env, "", "channel", "create", "big", "-replicas", "3")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "eligible") || !strings.Contains(r.err, "(not_enough_nodes, HTTP 409)") {
		t.Fatalf("too many replicas: %q", r.err)
	}
	r = shardnet(t, env, "", "channel", "create", "Bad_Name")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(invalid_channel, HTTP 400)") {
		t.Fatalf("bad name: %q", r.err)
	}
	expect(t, shardnet(t, env, "", "kv", "put", "nft", "a", "1"), 0, "")
	r = shardnet(t, env, "", "channel", "get", "nft")
	expect(t, r, 0, "Voters:")
	if !strings.Contains(r.out, "leader") || !strings.Contains(r.out, "1 keys") {
		t.Fatalf("channel get:\n%s", r.out)
	}
	r = shardnet(t, env, "", "channel", "get", "nft", "-json")
	var ch api.Channel
	if err := json.Unmarshal([]byte(r.out), &ch); err != nil || ch.Name != "nft" || len(ch.Placement) != 1 || ch.Placement[0].Applied != 1 {
		t.Fatalf("channel get -json: %q (%v)", r.out, err)
	}
	expect(t, shardnet(t, env, "", "channel", "ls"), 0, "nft")
	r = shardnet(t, env, "", "members")
	expect(t, r, 0, "")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.HasPrefix(lines[1], "node-1 ") {
		t.Fatalf("members:\n%s", r.out)
	}
	// Aligned: every column starts at the same offset on both lines.
	if strings.Index(lines[0], "ROLE") != strings.Index(lines[1], "core") {
		t.Fatalf("members table is not aligned:\n%s", r.out)
	}
	for _, col := range []string{" OPERATOR ", " STATE ", " DATA ", " DISK ", " FREE ", " REPLICAS ", " USED "} {
		if !strings.Contains(lines[0], col) {
			t.Fatalf("members: no%scolumn:\n%s", col, r.out)
		}
	}
	if !strings.HasSuffix(lines[0], " VERSION") || !strings.HasSuffix(lines[1], fmt.Sprintf(" %d", fsm.Version)) {
		t.Fatalf("members: no version column:\n%s", r.out)
	}
	var nodes []api.Node
	if err := json.Unmarshal([]byte(shardnet(t, env, "", "members", "-json").out), &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("members -json: %v", err)
	}
	expect(t, shardnet(t, env, "", "channel", "rm", "nft"), 0, "deleted")
	r = shardnet(t, env, "", "channel", "get", "nft")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(channel_not_found, HTTP 404)") {
		t.Fatalf("get of a deleted channel: %q", r.err)
	}
}

func TestChannelScale(t *testing.T) {
	_, addr := testNode(t, "", "nft")
	env := map[string]string{"SHARDNET_ADDR": addr}
	r := shardnet(t, env, "", "channel", "scale", "nft", "-replicas", "3", "-timeout", "10s")
	expect(t, r, 0, "Placement: ")
	if !regexp.MustCompile(`Progress:\s+converged\n`).MatchString(r.out) || !regexp.MustCompile(`Replicas:\s+3\n`).MatchString(r.out) {
		t.Fatalf("channel scale printed:\n%s", r.out)
	}
	expect(t, shardnet(t, env, "", "channel", "scale", "nft", "-quota", "1024"), 0, "Quota:")
	expect(t, shardnet(t, env, "", "channel", "scale", "nft", "-chunk-size", "1MiB"), 0, "1048576 bytes")
	expect(t, shardnet(t, env, "", "channel", "scale", "nft", "-chunk-size", "1MB"), 2, "")
	r = shardnet(t, env, "", "channel", "scale", "nft", "-replicas", "9")
	expect(t, r, 1, "")
	if !strings.Contains(r.err, "(invalid_request, HTTP 400)") {
		t.Fatalf("9 replicas: %q", r.err)
	}
	expect(t, shardnet(t, env, "", "channel", "scale", "nft"), 2, "")
}

func TestUsage(t *testing.T) {
	_, addr := testNode(t, "", "nft")
	env := map[string]string{"SHARDNET_ADDR": addr}
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no command", nil, 2},
		{"unknown command", []string{"frobnicate"}, 2},
		{"help", []string{"help"}, 0},
		{"help of a command", []string{"help", "kv"}, 0},
		{"kv without subcommand", []string{"kv"}, 2},
		{"kv unknown subcommand", []string{"kv", "cp"}, 2},
		{"kv put without value", []string{"kv", "put", "nft", "k"}, 2},
		{"kv put value and file", []string{"kv", "put", "nft", "k", "v", "-file", "x"}, 2},
		{"kv put too many args", []string{"kv", "put", "nft", "k", "v", "w"}, 2},
		{"kv put bad cas", []string{"kv", "put", "nft", "k", "v", "-cas", "abc"}, 2},
		{"kv get unknown flag", []string{"kv", "get", "nft", "k", "-stale"}, 2},
		{"kv get wait without index", []string{"kv", "get", "nft", "k", "-wait", "1s"}, 2},
		{"kv get -h", []string{"kv", "get", "-h"}, 0},
		{"kv ls negative limit", []string{"kv", "ls", "nft", "-limit", "-1"}, 2},
		{"channel create without name", []string{"channel", "create"}, 2},
		{"channel repair without node", []string{"channel", "repair", "nft"}, 2},
		{"members with an argument", []string{"members", "x"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := shardnet(t, env, "", tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tt.code, r.err)
			}
			if tt.code == 2 && r.err == "" {
				t.Errorf("a usage error printed nothing")
			}
		})
	}
	expect(t, shardnet(t, nil, "", "version"), 0, "shardnet "+version)
	// A repair of a replica no hash check marked is refused by the server.
	if r := shardnet(t, env, "", "channel", "repair", "nft", "-node", "n1"); r.code != 1 || !strings.Contains(r.err, "(not_corrupt, HTTP 409)") {
		t.Fatalf("channel repair of a sound replica: exit %d, stderr %q", r.code, r.err)
	}
	// A server-side validation error is exit 1 with the server's code.
	r := shardnet(t, env, "", "kv", "get", "nft", "k", "-consistency", "strong")
	if r.code != 1 || !strings.Contains(r.err, "(invalid_request, HTTP 400)") {
		t.Fatalf("bad consistency: %d %q", r.code, r.err)
	}
}
