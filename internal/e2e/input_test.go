package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// (d) Bad input of every kind gets its documented status and code, and
// changes nothing: the channel's applied index does not move.
func TestBadInputChangesNothing(t *testing.T) {
	const token = "s3cret"
	c := testcluster.New(t, testcluster.Options{Core: 3, Token: token})
	c.CreateChannel("in", 3)
	ctx := ctxT(t)
	if _, err := c.Client(0).Put(ctx, "in", "existing", []byte("v1"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	appliedIndex := func() string {
		req, _ := http.NewRequest("GET", c.Nodes[0].URL()+"/v1/channels/in/kv/?prefix=", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get(api.HeaderIndex)
	}
	before := appliedIndex()

	big := strings.Repeat("k", 1025)
	txnOps := func(n int) string {
		var ops []string
		for i := range n {
			ops = append(ops, fmt.Sprintf(`{"op":"put","key":"t%d","value":"dg=="}`, i))
		}
		return `{"success":[` + strings.Join(ops, ",") + `]}`
	}
	cases := []struct {
		name, method, path, body, auth string
		status                         int
		code                           string
	}{
		{"no token", "PUT", "/v1/channels/in/kv/a", "v", "-", 401, api.CodeUnauthorized},
		{"wrong token", "PUT", "/v1/channels/in/kv/a", "v", "Bearer nope", 401, api.CodeUnauthorized},
		{"key too large", "PUT", "/v1/channels/in/kv/" + big, "v", "", 400, api.CodeKeyTooLarge},
		{"key not utf-8", "PUT", "/v1/channels/in/kv/%FF%FE", "v", "", 400, api.CodeInvalidKey},
		{"key with NUL", "PUT", "/v1/channels/in/kv/a%00b", "v", "", 400, api.CodeInvalidKey},
		{"value too large", "PUT", "/v1/channels/in/kv/a", strings.Repeat("x", 1<<20+1), "", 413, api.CodeValueTooLarge},
		{"cas not a number", "PUT", "/v1/channels/in/kv/a?cas=abc", "v", "", 400, api.CodeBadRequest},
		{"cas mismatch", "PUT", "/v1/channels/in/kv/existing?cas=1", "v", "", 409, api.CodeCASMismatch},
		{"cas create-only on existing", "PUT", "/v1/channels/in/kv/existing?cas=0", "v", "", 409, api.CodeCASMismatch},
		{"delete cas mismatch", "DELETE", "/v1/channels/in/kv/existing?cas=1", "", "", 409, api.CodeCASMismatch},
		{"bad consistency", "GET", "/v1/channels/in/kv/existing?consistency=eventual", "", "", 400, api.CodeBadRequest},
		{"bad index", "GET", "/v1/channels/in/kv/existing?index=-1&wait=1s", "", "", 400, api.CodeBadRequest},
		{"bad wait", "GET", "/v1/channels/in/kv/existing?index=1&wait=forever", "", "", 400, api.CodeBadRequest},
		{"bad limit", "GET", "/v1/channels/in/kv/?limit=0", "", "", 400, api.CodeBadRequest},
		{"missing channel", "PUT", "/v1/channels/nope/kv/a", "v", "", 404, api.CodeChannelNotFound},
		{"bad channel name", "PUT", "/v1/channels/NOPE/kv/a", "v", "", 400, api.CodeInvalidChannel},
		{"missing key", "GET", "/v1/channels/in/kv/none", "", "", 404, api.CodeKeyNotFound},
		{"txn not json", "POST", "/v1/channels/in/txn", "{", "", 400, api.CodeBadRequest},
		{"txn unknown field", "POST", "/v1/channels/in/txn", `{"succes":[]}`, "", 400, api.CodeBadRequest},
		{"txn bad op", "POST", "/v1/channels/in/txn", `{"success":[{"op":"rename","key":"a"}]}`, "", 400, api.CodeBadRequest},
		{"txn bad key", "POST", "/v1/channels/in/txn", `{"success":[{"op":"put","key":"","value":"dg=="}]}`, "", 400, api.CodeInvalidKey},
		{"txn too many ops", "POST", "/v1/channels/in/txn", txnOps(129), "", 413, api.CodeTxnTooLarge},
		{"channel bad json", "POST", "/v1/channels", `{"name":`, "", 400, api.CodeBadRequest},
		{"cas with a ';' pair on an existing key", "PUT", "/v1/channels/in/kv/existing?cas=1;x=2", "overwritten", "", 400, api.CodeBadRequest},
		{"cas with a trailing ';'", "PUT", "/v1/channels/in/kv/existing?cas=0;", "overwritten", "", 400, api.CodeBadRequest},
		{"delete cas with a ';'", "DELETE", "/v1/channels/in/kv/existing?cas=1;", "", "", 400, api.CodeBadRequest},
		{"cas twice", "PUT", "/v1/channels/in/kv/existing?cas=3&cas=4", "overwritten", "", 400, api.CodeBadRequest},
		{"unknown parameter", "PUT", "/v1/channels/in/kv/existing?cass=0", "overwritten", "", 400, api.CodeBadRequest},
		{"txn key not UTF-8", "POST", "/v1/channels/in/txn", "{\"success\":[{\"op\":\"put\",\"key\":\"e\xffx\",\"value\":\"dg==\"}]}", "", 400, api.CodeInvalidKey},
		{"txn key lone surrogate", "POST", "/v1/channels/in/txn", `{"success":[{"op":"put","key":"\udfff","value":"dg=="}]}`, "", 400, api.CodeInvalidKey},
		{"unknown route", "GET", "/v1/nowhere", "", "", 404, api.CodeNotFound},
		{"wrong method", "PATCH", "/v1/channels/in/kv/a", "", "", 405, api.CodeMethodNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range c.Nodes { // the same answer on every node
				req, err := http.NewRequest(tc.method, c.Nodes[i].URL()+tc.path, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				switch tc.auth {
				case "":
					req.Header.Set("Authorization", "Bearer "+token)
				case "-":
				default:
					req.Header.Set("Authorization", tc.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var eb api.ErrorBody
				if resp.StatusCode != tc.status || json.Unmarshal(body, &eb) != nil || eb.Error.Code != tc.code || eb.Error.Message == "" {
					t.Fatalf("node %d: %s %s = %d %s; want %d %s", i, tc.method, tc.path, resp.StatusCode, bytes.TrimSpace(body), tc.status, tc.code)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Fatalf("error content type %q", ct)
				}
			}
		})
	}
	// CAS failures are decided in the log (they are linearizable), so they
	// may advance the applied index; every other case must not. Compare
	// the data instead: nothing was written.
	list, err := c.Client(0).List(ctx, "in", "", "", 100, api.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Key != "existing" || string(list.Items[0].Value) != "v1" {
		t.Fatalf("state changed by bad input: %+v", list.Items)
	}
	t.Logf("applied index before %s, after %s", before, appliedIndex())
}

func TestChannelQuota(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 1})
	ctx := ctxT(t)
	if _, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "small", Replicas: 1, QuotaBytes: 1000}); err != nil {
		t.Fatal(err)
	}
	c.WaitLeader("small")
	val := []byte(strings.Repeat("x", 300))
	n := 0
	for i := range 10 {
		_, err := c.Client(0).Put(ctx, "small", fmt.Sprintf("k%d", i), val, api.PutOptions{})
		if e := api.AsError(err); e != nil && e.Status == 507 && e.Code == api.CodeQuotaExceeded {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n < 2 || n > 3 {
		t.Fatalf("%d writes of 300 bytes fit a 1000-byte quota", n)
	}
	// Deletes still work and free room.
	if _, err := c.Client(0).Delete(ctx, "small", "k0", api.DeleteOptions{}); err != nil {
		t.Fatalf("delete over quota: %v", err)
	}
	if _, err := c.Client(0).Put(ctx, "small", "again", val, api.PutOptions{}); err != nil {
		t.Fatalf("put after freeing room: %v", err)
	}
}
