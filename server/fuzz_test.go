package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

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

// FuzzStrictQuery: for every endpoint, parseQuery accepts a query string
// exactly when url.ParseQuery reads it whole (no ';', no bad escape), every
// name is one the endpoint takes and no name comes twice; and then it reads
// the same values. Whatever else is refused, so a condition such as cas can
// never be lost on the way to the handler.
func FuzzStrictQuery(f *testing.F) {
	for _, s := range []string{"", "cas=1", "cas=1;x=2", "cas=0;", "cas=1&cas=2", "cas=%zz", "c%61s=1", "a=1&&b=2&", "cas",
		"consistency=stale&index=3&wait=1s", "prefix=a%3Bb&limit=5", "ready=1", "seconds=1&gc=1", "%3B=1", "=1", "cas=1&"} {
		f.Add(s)
	}
	var endpoints [][]string
	for _, rt := range New(Config{Backend: newFake("nft")}).routeTable() {
		for _, ep := range rt.methods {
			endpoints = append(endpoints, ep.params)
		}
	}
	f.Fuzz(func(t *testing.T, raw string) {
		want, perr := url.ParseQuery(raw)
		for _, known := range endpoints {
			got, err := parseQuery(raw, known)
			ok := perr == nil
			for name, vs := range want {
				if len(vs) != 1 || !slices.Contains(known, name) {
					ok = false
				}
			}
			if ok != (err == nil) {
				t.Fatalf("parseQuery(%q, %v): error %v; url.ParseQuery gives %v, %v", raw, known, err, want, perr)
			}
			if err != nil {
				if !errors.Is(err, errBadRequest) {
					t.Fatalf("parseQuery(%q) refused with %v, not invalid_request", raw, err)
				}
				continue
			}
			if strings.Contains(raw, ";") {
				t.Fatalf("parseQuery(%q) accepted a ';'", raw)
			}
			if len(got) != len(want) {
				t.Fatalf("parseQuery(%q) = %v, url.ParseQuery %v", raw, got, want)
			}
			for name, vs := range want {
				if got.Get(name) != vs[0] {
					t.Fatalf("parseQuery(%q)[%q] = %q, url.ParseQuery %q", raw, name, got.Get(name), vs[0])
				}
			}
		}
	})
}

// FuzzJSONText: checkJSONText refuses a body exactly when decoding one of
// its strings would change it (invalid UTF-8 or a lone surrogate): what it
// accepts survives a decode and re-encode of its strings byte for byte.
func FuzzJSONText(f *testing.F) {
	for _, s := range []string{`{"key":"a"}`, "{\"key\":\"a\xff\"}", `{"key":"\ud800"}`, `{"key":"\ud83d\ude00"}`,
		`{"key":"\\ud800"}`, `["\udc00x"]`, `"\u00e9"`, "\"\xed\xa0\x80\"", `{"key":"\ud83d\u0041"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v any
		if json.Unmarshal(body, &v) != nil {
			return // not JSON: the decoder refuses it anyway
		}
		err := checkJSONText(body)
		lossless := jsonStringsLossless(body)
		if (err == nil) != lossless {
			t.Fatalf("checkJSONText(%q) = %v, but decoding its strings is lossless: %v", body, err, lossless)
		}
	})
}

// jsonStringsLossless reports whether every string of a JSON text decodes
// without replacing anything by U+FFFD that was not written as one.
func jsonStringsLossless(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	var from int64
	for {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		// body[from:to] is this token and the delimiters before it.
		to := dec.InputOffset()
		raw := body[from:to]
		from = to
		s, ok := tok.(string)
		if !ok || !strings.ContainsRune(s, utf8.RuneError) {
			continue
		}
		// A U+FFFD the client wrote (as UTF-8 or as \ufffd) is text; one
		// the decoder made is not.
		written := bytes.Count(raw, []byte("\uFFFD")) + bytes.Count(bytes.ToLower(raw), []byte(`\ufffd`))
		if strings.Count(s, "\uFFFD") > written {
			return false
		}
	}
}
