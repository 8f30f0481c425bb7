package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchJSON is the -json contract another script reads (docs/benchmarks.md
// "shardnet bench"): every field it names must be there.
type benchJSON struct {
	Op             string             `json:"op"`
	Channels       *int               `json:"channels"`
	Conns          *int               `json:"conns"`
	Clients        *int               `json:"clients"`
	ValueSize      *int               `json:"value_size"`
	Keys           *int               `json:"keys"`
	Read           string             `json:"read"`
	Target         string             `json:"target"`
	Requests       *int64             `json:"requests"`
	Errors         *int64             `json:"errors"`
	ErrorsByStatus map[string]int64   `json:"errors_by_status"`
	DurationS      *float64           `json:"duration_s"`
	Throughput     *float64           `json:"throughput"`
	Latency        map[string]float64 `json:"latency_ms"`
	ClientCPU      *float64           `json:"client_cpu_us_per_req"`
	Endpoints      map[string]string  `json:"endpoints"`
}

func parseBench(t *testing.T, r result) benchJSON {
	t.Helper()
	expect(t, r, 0, "")
	var b benchJSON
	if err := json.Unmarshal([]byte(r.out), &b); err != nil {
		t.Fatalf("bench -json printed %q: %v", r.out, err)
	}
	if b.Channels == nil || b.Conns == nil || b.Clients == nil || b.ValueSize == nil || b.Keys == nil || b.Requests == nil ||
		b.Errors == nil || b.ErrorsByStatus == nil || b.DurationS == nil || b.Throughput == nil || b.ClientCPU == nil {
		t.Fatalf("bench -json lacks a field: %s", r.out)
	}
	for _, k := range []string{"mean", "p50", "p90", "p99", "p999", "max"} {
		if _, ok := b.Latency[k]; !ok {
			t.Fatalf("bench -json latency_ms lacks %s: %s", k, r.out)
		}
	}
	return b
}

func TestBenchCommand(t *testing.T) {
	mem, addr := testNode(t, "tok", "bench")
	mem.HTTPAddr = strings.TrimPrefix(addr, "http://")
	env := map[string]string{"SHARDNET_ADDR": addr, "SHARDNET_TOKEN": "tok"}

	b := parseBench(t, shardnet(t, env, "", "bench", "put", "-json", "-count", "60", "-keys", "20", "-conns", "3",
		"-value-size", "64", "-target", "leader"))
	if b.Op != "put" || *b.Requests != 60 || *b.Errors != 0 || *b.Conns != 3 || *b.Clients != 3 || *b.ValueSize != 64 ||
		*b.Keys != 20 || b.Target != "leader" || b.Read != "linearizable" || *b.Throughput <= 0 || b.Latency["p50"] <= 0 ||
		b.Endpoints["bench"] != addr {
		t.Fatalf("bench put -json: %+v", b)
	}
	if r := shardnet(t, env, "", "kv", "get", "bench", "key-0000000"); r.code == 0 && len(r.out) != 64 {
		t.Fatalf("a key bench wrote holds %d bytes, want 64", len(r.out))
	}

	// A bad token: every request is an error, counted by status.
	b = parseBench(t, shardnet(t, env, "", "bench", "get", "-json", "-count", "10", "-token", "wrong", "-read", "stale"))
	if *b.Requests != 10 || *b.Errors != 10 || b.ErrorsByStatus["401"] != 10 || b.Read != "stale" {
		t.Fatalf("bench with a bad token: %+v", b)
	}

	// Text: etcd benchmark's summary, the histogram and the percentiles.
	r := shardnet(t, env, "", "bench", "mixed", "-count", "40", "-keys", "20", "-prefill", "-clients", "5", "-conns", "2")
	expect(t, r, 0, "Requests/sec:")
	for _, want := range []string{"Summary:", "Requests:     40 (0 errors)", "Response time histogram", "99% in ", "99.9% in ", "∎", "stopped by count"} {
		if !strings.Contains(r.out, want) {
			t.Fatalf("bench text output lacks %q:\n%s", want, r.out)
		}
	}
	// -create on the one-node backend, then a channel that is missing.
	expect(t, shardnet(t, env, "", "bench", "txn", "-count", "5", "-channel", "fresh", "-create", "-replicas", "1"), 0, "Summary:")
	if r := shardnet(t, env, "", "bench", "put", "-count", "5", "-channel", "absent"); r.code != 1 || !strings.Contains(r.err, "-create") {
		t.Fatalf("bench of a missing channel: exit %d, %q", r.code, r.err)
	}

	for _, args := range [][]string{
		{"bench"},
		{"bench", "frob"},
		{"bench", "put", "get"},
		{"bench", "put", "-conns", "0"},
		{"bench", "put", "-duration", "0s"},
		{"bench", "put", "-target", "nearest"},
		{"bench", "get", "-read", "strong"},
		{"bench", "mixed", "-read-ratio", "2"},
	} {
		if r := shardnet(t, env, "", args...); r.code != 2 || r.err == "" {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", args, r.code, r.err)
		}
	}
}
