package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

func bytesReader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

// errorBody decodes an error answer, failing the test if it is not one.
func errorBody(t *testing.T, resp *http.Response) api.Error {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error answer has Content-Type %q, want application/json", ct)
	}
	var b api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatalf("error answer is not {\"error\":{...}}: %v", err)
	}
	if b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("error answer lacks code or message: %+v", b.Error)
	}
	return b.Error
}

func txnJSON(ops int, mutate func(*api.TxnRequest)) []byte {
	tr := api.TxnRequest{}
	for i := 0; i < ops; i++ {
		tr.Success = append(tr.Success, api.TxnOp{Op: api.OpPut, Key: fmt.Sprintf("k%d", i), Value: []byte("v")})
	}
	if mutate != nil {
		mutate(&tr)
	}
	b, _ := json.Marshal(tr)
	return b
}

// TestValidation: every refused request answers its status and code, and
// nothing reaches the backend's write or create path.
func TestValidation(t *testing.T) {
	big := bytes.Repeat([]byte("x"), fsm.MaxValueBytes+1)
	longKey := strings.Repeat("k", fsm.MaxKeyBytes+1)
	tests := []struct {
		name         string
		method, path string
		body         []byte
		status       int
		code         string
		msg          string // a part of the message, when it matters
	}{
		// channel names
		{"channel uppercase", "PUT", "/v1/channels/Nft/kv/a", []byte("v"), 400, api.CodeInvalidChannel, "a-z"},
		{"channel underscore", "PUT", "/v1/channels/n_ft/kv/a", []byte("v"), 400, api.CodeInvalidChannel, ""},
		{"channel too long", "PUT", "/v1/channels/" + strings.Repeat("a", 64) + "/kv/a", []byte("v"), 400, api.CodeInvalidChannel, ""},
		{"channel escaped", "GET", "/v1/channels/n%2Dft/kv/a", nil, 400, api.CodeInvalidChannel, ""},
		{"channel get invalid", "GET", "/v1/channels/A", nil, 400, api.CodeInvalidChannel, ""},
		// keys
		{"empty key", "PUT", "/v1/channels/nft/kv/", []byte("v"), 400, api.CodeInvalidKey, "empty"},
		{"empty key delete", "DELETE", "/v1/channels/nft/kv/", nil, 400, api.CodeInvalidKey, "empty"},
		{"NUL in key", "PUT", "/v1/channels/nft/kv/a%00b", []byte("v"), 400, api.CodeInvalidKey, "NUL"},
		{"not UTF-8", "PUT", "/v1/channels/nft/kv/a%FFb", []byte("v"), 400, api.CodeInvalidKey, "UTF-8"},
		{"key too large", "PUT", "/v1/channels/nft/kv/" + longKey, []byte("v"), 400, api.CodeKeyTooLarge, "1024"},
		{"key too large get", "GET", "/v1/channels/nft/kv/" + longKey, nil, 400, api.CodeKeyTooLarge, ""},
		// values
		{"value too large", "PUT", "/v1/channels/nft/kv/a", big, 413, api.CodeValueTooLarge, ""},
		// parameters
		{"cas not a number", "PUT", "/v1/channels/nft/kv/a?cas=abc", []byte("v"), 400, api.CodeBadRequest, "cas"},
		{"cas negative", "DELETE", "/v1/channels/nft/kv/a?cas=-1", nil, 400, api.CodeBadRequest, "cas"},
		{"cas empty", "PUT", "/v1/channels/nft/kv/a?cas=", []byte("v"), 400, api.CodeBadRequest, "cas"},
		{"consistency unknown", "GET", "/v1/channels/nft/kv/a?consistency=strong", nil, 400, api.CodeBadRequest, "linearizable"},
		{"index not a number", "GET", "/v1/channels/nft/kv/a?index=x", nil, 400, api.CodeBadRequest, "index"},
		{"wait without index", "GET", "/v1/channels/nft/kv/a?wait=1s", nil, 400, api.CodeBadRequest, "index"},
		{"wait not a duration", "GET", "/v1/channels/nft/kv/a?index=1&wait=30", nil, 400, api.CodeBadRequest, "duration"},
		{"wait negative", "GET", "/v1/channels/nft/kv/a?index=1&wait=-1s", nil, 400, api.CodeBadRequest, "duration"},
		{"limit zero", "GET", "/v1/channels/nft/kv/?limit=0", nil, 400, api.CodeBadRequest, "limit"},
		{"limit too big", "GET", "/v1/channels/nft/kv/?limit=1001", nil, 400, api.CodeBadRequest, "1000"},
		{"limit not a number", "GET", "/v1/channels/nft/kv?limit=ten", nil, 400, api.CodeBadRequest, ""},
		{"prefix with NUL", "GET", "/v1/channels/nft/kv/?prefix=a%00", nil, 400, api.CodeInvalidKey, "prefix"},
		{"after too long", "GET", "/v1/channels/nft/kv/?after=" + longKey, nil, 400, api.CodeKeyTooLarge, "after"},
		{"list consistency", "GET", "/v1/channels/nft/kv/?consistency=eventual", nil, 400, api.CodeBadRequest, ""},
		{"list blocking", "GET", "/v1/channels/nft/kv/?index=3", nil, 400, api.CodeBadRequest, "listings"},
		// strict query strings: a pair the parser cannot read, a name the
		// endpoint does not take, or a name given twice never leaves a
		// write without its condition (url.ParseQuery dropped "cas=1;x=2"
		// and the write became an unconditional overwrite)
		{"cas with semicolon pair", "PUT", "/v1/channels/nft/kv/a?cas=1;x=2", []byte("v"), 400, api.CodeBadRequest, "';'"},
		{"cas with trailing semicolon", "PUT", "/v1/channels/nft/kv/a?cas=0;", []byte("v"), 400, api.CodeBadRequest, "cas=0;"},
		{"delete cas with semicolon", "DELETE", "/v1/channels/nft/kv/a?cas=1;", nil, 400, api.CodeBadRequest, "';'"},
		{"semicolon before cas", "PUT", "/v1/channels/nft/kv/a?x;cas=1", []byte("v"), 400, api.CodeBadRequest, "';'"},
		{"cas twice", "PUT", "/v1/channels/nft/kv/a?cas=1&cas=2", []byte("v"), 400, api.CodeBadRequest, `"cas" is given more than once`},
		{"cas bad escape", "PUT", "/v1/channels/nft/kv/a?cas=%zz", []byte("v"), 400, api.CodeBadRequest, `"cas"`},
		{"name bad escape", "PUT", "/v1/channels/nft/kv/a?c%zzs=1", []byte("v"), 400, api.CodeBadRequest, "malformed"},
		{"unknown parameter on put", "PUT", "/v1/channels/nft/kv/a?cass=1", []byte("v"), 400, api.CodeBadRequest, `unknown query parameter "cass"`},
		{"unknown parameter on get", "GET", "/v1/channels/nft/kv/a?consistancy=stale", nil, 400, api.CodeBadRequest, "consistency, index, wait"},
		{"consistency twice", "GET", "/v1/channels/nft/kv/a?consistency=stale&consistency=linearizable", nil, 400, api.CodeBadRequest, "more than once"},
		{"get takes no cas", "GET", "/v1/channels/nft/kv/a?cas=1", nil, 400, api.CodeBadRequest, "cas"},
		{"list limit twice", "GET", "/v1/channels/nft/kv/?limit=1&limit=1000", nil, 400, api.CodeBadRequest, "limit"},
		{"txn takes no parameters", "POST", "/v1/channels/nft/txn?cas=1", txnJSON(1, nil), 400, api.CodeBadRequest, "takes none"},
		{"create takes no parameters", "POST", "/v1/channels?dry_run=1", []byte(`{"name":"nft2"}`), 400, api.CodeBadRequest, "dry_run"},
		{"health semicolon", "GET", "/v1/health?ready=1;", nil, 400, api.CodeBadRequest, "';'"},
		{"metrics takes no parameters", "GET", "/metrics?x=1", nil, 400, api.CodeBadRequest, "takes none"},
		// transactions
		{"txn empty body", "POST", "/v1/channels/nft/txn", nil, 400, api.CodeBadRequest, "empty"},
		{"txn not JSON", "POST", "/v1/channels/nft/txn", []byte("{"), 400, api.CodeBadRequest, ""},
		{"txn unknown field", "POST", "/v1/channels/nft/txn", []byte(`{"success":[],"then":[]}`), 400, api.CodeBadRequest, "then"},
		{"txn trailing data", "POST", "/v1/channels/nft/txn", []byte(`{"success":[{"op":"get","key":"a"}]} {}`), 400, api.CodeBadRequest, "after"},
		{"txn no ops", "POST", "/v1/channels/nft/txn", []byte(`{}`), 400, api.CodeBadRequest, "no compares"},
		{"txn too many ops", "POST", "/v1/channels/nft/txn", txnJSON(fsm.MaxTxnOps+1, nil), 413, api.CodeTxnTooLarge, "128"},
		{"txn ops and compares over the limit", "POST", "/v1/channels/nft/txn", txnJSON(fsm.MaxTxnOps, func(tr *api.TxnRequest) {
			tr.Compares = []api.Compare{{Key: "a", Target: api.TargetModifyIndex, Result: api.Equal}}
		}), 413, api.CodeTxnTooLarge, ""},
		{"txn bad op key", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) { tr.Success[0].Key = "a\x00" }), 400, api.CodeInvalidKey, "success[0].key"},
		{"txn empty key", "POST", "/v1/channels/nft/txn", txnJSON(0, func(tr *api.TxnRequest) {
			tr.Failure = []api.TxnOp{{Op: api.OpGet, Key: ""}}
		}), 400, api.CodeInvalidKey, "failure[0].key"},
		{"txn key too large", "POST", "/v1/channels/nft/txn", txnJSON(0, func(tr *api.TxnRequest) {
			tr.Compares = []api.Compare{{Key: longKey, Target: api.TargetValue, Result: api.Equal}}
		}), 400, api.CodeKeyTooLarge, "compares[0].key"},
		{"txn unknown op", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) { tr.Success[0].Op = "upsert" }), 400, api.CodeBadRequest, "put, delete or get"},
		{"txn unknown target", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) {
			tr.Compares = []api.Compare{{Key: "a", Target: "version", Result: api.Equal}}
		}), 400, api.CodeBadRequest, "target"},
		{"txn unknown result", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) {
			tr.Compares = []api.Compare{{Key: "a", Target: api.TargetValue, Result: "="}}
		}), 400, api.CodeBadRequest, "result"},
		{"txn value compare with index", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) {
			tr.Compares = []api.Compare{{Key: "a", Target: api.TargetValue, Result: api.Equal, Index: 3}}
		}), 400, api.CodeBadRequest, "not an index"},
		{"txn index compare with value", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) {
			tr.Compares = []api.Compare{{Key: "a", Target: api.TargetCreateIndex, Result: api.Less, Value: []byte("x")}}
		}), 400, api.CodeBadRequest, "not a value"},
		{"txn get with value", "POST", "/v1/channels/nft/txn", txnJSON(0, func(tr *api.TxnRequest) {
			tr.Success = []api.TxnOp{{Op: api.OpGet, Key: "a", Value: []byte("x")}}
		}), 400, api.CodeBadRequest, "no value"},
		// keys must be UTF-8 text in a transaction as in the KV path: the
		// JSON decoder would turn each of these into U+FFFD
		{"txn key with a raw 0xFF byte", "POST", "/v1/channels/nft/txn", []byte("{\"success\":[{\"op\":\"put\",\"key\":\"a\xffb\",\"value\":\"dg==\"}]}"), 400, api.CodeInvalidKey, "UTF-8"},
		{"txn key with a lone high surrogate", "POST", "/v1/channels/nft/txn", []byte(`{"success":[{"op":"put","key":"a\ud800","value":"dg=="}]}`), 400, api.CodeInvalidKey, "UTF-8"},
		{"txn key with a lone low surrogate", "POST", "/v1/channels/nft/txn", []byte(`{"compares":[{"key":"\udc00","target":"value","result":"equal"}]}`), 400, api.CodeInvalidKey, "UTF-8"},
		{"txn key with reversed surrogates", "POST", "/v1/channels/nft/txn", []byte(`{"success":[{"op":"get","key":"\ude00\ud83d"}]}`), 400, api.CodeInvalidKey, "UTF-8"},
		{"txn key with a high surrogate then a letter", "POST", "/v1/channels/nft/txn", []byte(`{"success":[{"op":"get","key":"\ud83d\u0041"}]}`), 400, api.CodeInvalidKey, "UTF-8"},
		{"txn op with invalid UTF-8", "POST", "/v1/channels/nft/txn", []byte("{\"success\":[{\"op\":\"p\xc3t\",\"key\":\"a\"}]}"), 400, api.CodeBadRequest, "UTF-8"},
		{"create with invalid UTF-8 zone", "POST", "/v1/channels", []byte("{\"name\":\"nft2\",\"zones\":[\"\xfe\"]}"), 400, api.CodeBadRequest, "UTF-8"},
		{"txn value too large", "POST", "/v1/channels/nft/txn", txnJSON(1, func(tr *api.TxnRequest) { tr.Success[0].Value = big }), 413, api.CodeValueTooLarge, ""},
		{"txn over 4 MiB of values", "POST", "/v1/channels/nft/txn", txnJSON(5, func(tr *api.TxnRequest) {
			for i := range tr.Success {
				tr.Success[i].Value = big[:860<<10] // 4.2 MiB in all, 5.6 MiB of JSON
			}
		}), 413, api.CodeTxnTooLarge, ""},
		{"txn body too large", "POST", "/v1/channels/nft/txn", []byte(`{"success":[{"op":"put","key":"a","value":"` +
			base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), MaxTxnBodyBytes)) + `"}]}`), 413, api.CodeBodyTooLarge, ""},
		{"txn bad channel", "POST", "/v1/channels/-NFT-/txn", txnJSON(1, nil), 400, api.CodeInvalidChannel, ""},
		// channel management
		{"create bad name", "POST", "/v1/channels", []byte(`{"name":"NFT","replicas":3}`), 400, api.CodeInvalidChannel, ""},
		{"create empty name", "POST", "/v1/channels", []byte(`{"replicas":3}`), 400, api.CodeInvalidChannel, ""},
		{"create zero replicas", "POST", "/v1/channels", []byte(`{"name":"nft","replicas":0}`), 400, api.CodeBadRequest, "1 to 7"},
		{"create eight replicas", "POST", "/v1/channels", []byte(`{"name":"nft","replicas":8}`), 400, api.CodeBadRequest, "1 to 7"},
		{"create negative replicas", "POST", "/v1/channels", []byte(`{"name":"nft","replicas":-1}`), 400, api.CodeBadRequest, ""},
		{"create unknown field", "POST", "/v1/channels", []byte(`{"name":"nft","replica":3}`), 400, api.CodeBadRequest, "replica"},
		{"create duplicate node", "POST", "/v1/channels", []byte(`{"name":"nft","nodes":["a","a"]}`), 400, api.CodeBadRequest, "twice"},
		{"create empty zone", "POST", "/v1/channels", []byte(`{"name":"nft","zones":[""]}`), 400, api.CodeBadRequest, "empty"},
		{"create body too large", "POST", "/v1/channels", bytes.Repeat([]byte(" "), MaxJSONBodyBytes+1), 413, api.CodeBodyTooLarge, ""},
		// routing
		{"unknown route", "GET", "/v1/nope", nil, 404, api.CodeNotFound, ""},
		{"unknown channel sub-route", "GET", "/v1/channels/nft/files2", nil, 404, api.CodeNotFound, ""},
		{"not under v1", "GET", "/v2/status", nil, 404, api.CodeNotFound, ""},
		{"trailing slash on channels", "GET", "/v1/channels/", nil, 404, api.CodeNotFound, ""},
		{"wrong method", "POST", "/v1/status", nil, 405, api.CodeMethodNotAllowed, "GET"},
		{"wrong method on kv", "POST", "/v1/channels/nft/kv/a", []byte("v"), 405, api.CodeMethodNotAllowed, ""},
		{"wrong method on txn", "GET", "/v1/channels/nft/txn", nil, 405, api.CodeMethodNotAllowed, ""},
	}
	f := newFake("nft")
	_, hs := testServer(t, Config{Backend: f})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := [...]int64{f.proposals.Load(), f.creates.Load(), f.reads.Load()}
			resp := do(t, hs.URL, tt.method, tt.path, tt.body, nil)
			if resp.StatusCode != tt.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, b)
			}
			e := errorBody(t, resp)
			if e.Code != tt.code {
				t.Errorf("code %q, want %q (message %q)", e.Code, tt.code, e.Message)
			}
			if !strings.Contains(e.Message, tt.msg) {
				t.Errorf("message %q does not say %q", e.Message, tt.msg)
			}
			after := [...]int64{f.proposals.Load(), f.creates.Load(), f.reads.Load()}
			if after != before {
				t.Errorf("backend called for a refused request: proposals, creates, reads %v -> %v", before, after)
			}
			if tt.status == 405 && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		raw  string
		want string
		err  error
	}{
		{"a", "a", nil},
		{"a/b", "a/b", nil},
		{"a%2Fb", "a/b", nil},
		{"a%252Fb", "a%2Fb", nil},
		{"%2E%2E", "..", nil},
		{"a//b/../c", "a//b/../c", nil},
		{"sp%20ace+plus", "sp ace+plus", nil},
		{"%E6%97%A5", "日", nil},
		{"bad%zz", "", fsm.ErrInvalidKey},
		{"trunc%4", "", fsm.ErrInvalidKey},
		{"", "", fsm.ErrInvalidKey},
		{"%00", "", fsm.ErrInvalidKey},
		{"%C3", "", fsm.ErrInvalidKey},
		{strings.Repeat("%41", fsm.MaxKeyBytes+1), "", fsm.ErrKeyTooLarge},
	}
	for _, tt := range tests {
		got, err := parseKey(tt.raw)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("parseKey(%q) error %v, want %v", tt.raw, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("parseKey(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
		}
	}
}

func TestJitter(t *testing.T) {
	for _, d := range []int64{1, 15, 16, 1000, int64(MaxWait)} {
		for i := 0; i < 200; i++ {
			got := int64(jitter(time.Duration(d)))
			if span := d / 16; got < d-span || got > d+span {
				t.Fatalf("jitter(%d) = %d, outside ±1/16", d, got)
			}
		}
	}
	w, err := parseWatch(map[string][]string{"index": {"1"}, "wait": {"1h"}})
	if err != nil || w.wait > MaxWait+MaxWait/16 || w.wait < MaxWait-MaxWait/16 {
		t.Fatalf("wait=1h gives %v, %v; want MaxWait ±1/16", w.wait, err)
	}
}
