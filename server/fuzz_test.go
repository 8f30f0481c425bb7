package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// FuzzParseKey: any escaped path segment either becomes a key the state
// machine accepts or a clear error; never a panic, never a key that the
// log would refuse later.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"a", "a%2Fb", "%", "%zz", "%00", "%FF%FE", "..", "a/../b", "ü", strings.Repeat("k", 1025), ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		key, err := parseKey(raw)
		if err != nil {
			return
		}
		if verr := fsm.ValidateKey(key); verr != nil {
			t.Fatalf("parseKey(%q) = %q, which the fsm refuses: %v", raw, key, verr)
		}
	})
}

// FuzzTxnBody: any transaction body decodes to a command that encodes, or
// is refused; never a panic.
func FuzzTxnBody(f *testing.F) {
	f.Add([]byte(`{"compares":[{"key":"a","target":"modify_index","result":"equal","index":0}],"success":[{"op":"put","key":"a","value":"dg=="}]}`))
	f.Add([]byte(`{"success":[{"op":"get","key":"a"}],"failure":[{"op":"delete","key":"b"}]}`))
	f.Add([]byte(`{"compares":[{"key":"a","target":"value","result":"greater","value":"eA=="}]}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`{"success":[{"op":"put","key":"","value":null}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var tr api.TxnRequest
		if err := decodeStrict(body, &tr); err != nil {
			return
		}
		cmd, err := txnCommand(tr)
		if err != nil {
			return
		}
		if _, err := fsm.Encode(cmd); err != nil {
			t.Fatalf("validated txn does not encode: %v (body %q)", err, body)
		}
	})
}

// FuzzHandler drives the whole handler with arbitrary methods, paths,
// queries and bodies against an in-memory backend: every answer is a
// documented status with a JSON error body, never a panic or a 500.
func FuzzHandler(f *testing.F) {
	seeds := []struct{ method, target, body string }{
		{"PUT", "/v1/channels/nft/kv/a", "v"},
		{"GET", "/v1/channels/nft/kv/a?consistency=stale", ""},
		{"GET", "/v1/channels/nft/kv/a?index=1&wait=10ms", ""},
		{"DELETE", "/v1/channels/nft/kv/a?cas=3", ""},
		{"GET", "/v1/channels/nft/kv/?prefix=a&limit=2&after=a", ""},
		{"POST", "/v1/channels/nft/txn", `{"success":[{"op":"get","key":"a"}]}`},
		{"POST", "/v1/channels", `{"name":"x","replicas":3}`},
		{"GET", "/v1/channels/NFT/kv/%ZZ", ""},
		{"PATCH", "/v1/nodes", "{}"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, s.body)
	}
	srv := New(Config{Backend: newFake("nft")})
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t") || !validMethod(method) {
			return // not an HTTP request line a server could receive
		}
		req, err := http.NewRequest(method, "http://node"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s -> %d %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !bytes.Contains(rec.Body.Bytes(), []byte(`"error"`)) {
			t.Fatalf("%s %s -> %d without a JSON error: %q", method, target, rec.Code, rec.Body)
		}
	})
}

func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
