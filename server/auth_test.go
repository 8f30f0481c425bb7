package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

const operatorToken = "operator-s3cret"

// Who may call each endpoint: this test's own copy of the rules, so that a
// new route (or method) without a rule, or a rule changed by mistake,
// fails TestAccessEveryRoute.
var wantAccess = map[string]access.Rule{
	"GET " + routeHealth:     accessPublic,
	"GET " + routeStatus:     accessOperator,
	"GET " + routeNodes:      accessOperator,
	"GET " + routeNode:       accessOperator,
	"DELETE " + routeNode:    accessOperator,
	"POST " + routeDrain:     accessOperator,
	"DELETE " + routeDrain:   accessOperator,
	"POST " + routeLeave:     accessOperator,
	"GET " + routeChannels:   accessOperator,
	"POST " + routeChannels:  accessOperator,
	"GET " + routeChannel:    accessRead,
	"DELETE " + routeChannel: accessOperator,
	"PATCH " + routeChannel:  accessOperator,
	"GET " + routeKVList:     accessRead,
	"PUT " + routeKVList:     accessWrite,
	"DELETE " + routeKVList:  accessWrite,
	"GET " + routeKV:         accessRead,
	"PUT " + routeKV:         accessWrite,
	"DELETE " + routeKV:      accessWrite,
	"POST " + routeTxn:       accessWrite,
	"POST " + routeRepair:    accessOperator,
	"GET " + routeSnapshot:   accessOperator,
	"POST " + routeRestore:   accessOperator,
	"POST " + routeRecover:   accessOperator,
	"GET " + routeTokens:     accessWrite,
	"POST " + routeTokens:    accessWrite,
	"DELETE " + routeToken:   accessWrite,
	"POST " + routeSign:      accessRead,
	"PUT " + routeSettings:   accessWrite,
	"GET " + routeFileList:   accessRead,
	"GET " + routeFile:       accessRead,
	"PUT " + routeFile:       accessWrite,
	"DELETE " + routeFile:    accessWrite,
	"POST " + routeUploads:   accessWrite,
	"GET " + routeUpload:     accessWrite,
	"PATCH " + routeUpload:   accessWrite,
	"DELETE " + routeUpload:  accessWrite,
	"GET " + routeKeyring:    accessOperator,
	"POST " + routeKeyring:   accessOperator,
	"PUT " + routeKeyring:    accessOperator,
	"DELETE " + routeKeyring: accessOperator,
	"GET " + routeMetrics:    accessOperator,
	"GET " + routePprof:      accessOperator,
	"POST " + routePprof:     accessOperator,
}

// tokenKinds are the credentials every endpoint is tried with.
var tokenKinds = []string{"none", "garbage", "operator", "rw", "ro", "other-rw", "revoked", "expired", "wrong-secret"}

// wantStatus is what a kind of credential gets from an endpoint of a rule:
// 401, 403, or 0 for "let in" (whatever the handler answers then, never
// 401 or 403).
func wantStatus(rule access.Rule, kind string) int {
	switch kind {
	case "operator":
		return 0
	case "none":
		if rule == accessPublic {
			return 0
		}
		return http.StatusUnauthorized
	case "garbage", "revoked", "expired", "wrong-secret":
		if rule == accessPublic {
			return 0
		}
		return http.StatusUnauthorized
	case "rw":
		if rule == accessOperator {
			return http.StatusForbidden
		}
		return 0
	case "ro":
		if rule == accessOperator || rule == accessWrite {
			return http.StatusForbidden
		}
		return 0
	case "other-rw":
		if rule == accessPublic {
			return 0
		}
		return http.StatusForbidden
	}
	panic(kind)
}

// tokenServer is a server with an operator token over a fake backend
// holding channels nft and other, and a token of each kind.
func tokenServer(t *testing.T) (*fakeBackend, string, map[string]string) {
	t.Helper()
	f := newFake("nft", "other")
	_, hs := testServer(t, Config{Backend: f, Token: operatorToken})
	ctx := context.Background()
	issue := func(ch, scope string, exp time.Time) api.TokenCreated {
		tok, err := f.mem.IssueToken(ctx, ch, scope, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	rw := issue("nft", fsm.ScopeReadWrite, time.Time{})
	revoked := issue("nft", fsm.ScopeReadWrite, time.Time{})
	if err := f.mem.RevokeToken(ctx, "nft", revoked.ID); err != nil {
		t.Fatal(err)
	}
	id, _, _ := api.ParseToken(rw.Token)
	toks := map[string]string{
		"none":         "",
		"garbage":      "nope",
		"operator":     operatorToken,
		"rw":           rw.Token,
		"ro":           issue("nft", fsm.ScopeReadOnly, time.Time{}).Token,
		"other-rw":     issue("other", fsm.ScopeReadWrite, time.Time{}).Token,
		"revoked":      revoked.Token,
		"expired":      issue("nft", fsm.ScopeReadWrite, time.Now().Add(-time.Second)).Token,
		"wrong-secret": api.FormatToken(id, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
	}
	return f, hs.URL, toks
}

func bearer(tok string) http.Header {
	if tok == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// concretePath fills a route template for channel nft.
func concretePath(template string) string {
	return strings.NewReplacer("{ch}", "nft", "{key}", "k", "{id}", "00ff", "{path}", "a/b.png", "{profile}", "cmdline").Replace(template)
}

// Every endpoint has a rule, and every kind of credential gets from it
// exactly what the rule says: 401 without a valid token (none, unknown,
// wrong secret, revoked, expired), 403 with a valid one that may not do
// this (another channel's, read-only on a write, a channel's on cluster
// management).
func TestAccessEveryRoute(t *testing.T) {
	s := New(Config{Backend: newFake(), Token: operatorToken})
	seen := map[string]bool{}
	for _, rt := range s.routes {
		for m, ep := range rt.methods {
			name := m + " " + rt.template
			seen[name] = true
			want, ok := wantAccess[name]
			if !ok {
				t.Errorf("%s has no rule in wantAccess: say who may call it", name)
				continue
			}
			if ep.access != want {
				t.Errorf("%s: access %d, want %d", name, ep.access, want)
			}
		}
	}
	for name := range wantAccess {
		if !seen[name] {
			t.Errorf("wantAccess names %s, which the route table does not have", name)
		}
	}
	if t.Failed() {
		return
	}
	names := make([]string, 0, len(wantAccess))
	for name := range wantAccess {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		method, template, _ := strings.Cut(name, " ")
		rule := wantAccess[name]
		for _, kind := range tokenKinds {
			t.Run(name+"/"+kind, func(t *testing.T) {
				_, base, toks := tokenServer(t)
				var body []byte
				if method == http.MethodPost || method == http.MethodPut {
					body = []byte("{}")
				}
				resp := do(t, base, method, concretePath(template), body, bearer(toks[kind]))
				got := resp.StatusCode
				want := wantStatus(rule, kind)
				switch {
				case want == 0 && (got == http.StatusUnauthorized || got == http.StatusForbidden):
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("status %d, want the request let in: %s", got, b)
				case want != 0 && got != want:
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("status %d, want %d: %s", got, want, b)
				}
				if got == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
	}
}

// A channel token reaches its channel's unknown paths (404) but no path
// outside its channel.
func TestTokenOnUnknownPaths(t *testing.T) {
	_, base, toks := tokenServer(t)
	for _, c := range []struct {
		kind, path string
		want       int
	}{
		{"ro", "/v1/channels/nft/nope", http.StatusNotFound},
		{"ro", "/v1/channels/other/nope", http.StatusForbidden},
		{"ro", "/v1/nope", http.StatusForbidden},
		{"none", "/v1/channels/nft/nope", http.StatusUnauthorized},
		{"revoked", "/v1/channels/nft/nope", http.StatusUnauthorized},
	} {
		if got := do(t, base, http.MethodGet, c.path, nil, bearer(toks[c.kind])).StatusCode; got != c.want {
			t.Errorf("GET %s with %s: %d, want %d", c.path, c.kind, got, c.want)
		}
	}
}

func decodeJSON[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func wantCode(t *testing.T, resp *http.Response, status int, what string) {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: status %d, want %d: %s", what, resp.StatusCode, status, b)
	}
}

// Creating a channel answers a read-write token of it, once; tokens are
// issued, listed without secrets and revoked through the API.
func TestTokenLifecycle(t *testing.T) {
	_, base, toks := tokenServer(t)
	op := bearer(operatorToken)
	resp := do(t, base, http.MethodPost, "/v1/channels", []byte(`{"name":"fresh","replicas":1}`), op)
	wantCode(t, resp, http.StatusCreated, "create")
	ch := decodeJSON[api.Channel](t, resp)
	if _, _, ok := api.ParseToken(ch.Token); !ok {
		t.Fatalf("create answered token %q", ch.Token)
	}
	wantCode(t, do(t, base, http.MethodPut, "/v1/channels/fresh/kv/a", []byte("1"), bearer(ch.Token)), http.StatusOK, "write with the create token")
	if got := do(t, base, http.MethodGet, "/v1/channels/fresh", nil, op); strings.Contains(readAll(t, got), ch.Token) {
		t.Fatal("the channel's description shows the token again")
	}

	// A read-only token with a ttl, issued with a read-write token.
	resp = do(t, base, http.MethodPost, "/v1/channels/nft/tokens", []byte(`{"scope":"read-only","ttl":"1h"}`), bearer(toks["rw"]))
	wantCode(t, resp, http.StatusCreated, "issue")
	ro := decodeJSON[api.TokenCreated](t, resp)
	if ro.Scope != fsm.ScopeReadOnly || ro.ExpiresAt == nil || time.Until(*ro.ExpiresAt) < 59*time.Minute {
		t.Fatalf("issued %+v", ro)
	}
	wantCode(t, do(t, base, http.MethodGet, "/v1/channels/nft/kv/", nil, bearer(ro.Token)), http.StatusOK, "list with the new token")
	wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/kv/a", []byte("1"), bearer(ro.Token)), http.StatusForbidden, "write with it")

	list := do(t, base, http.MethodGet, "/v1/channels/nft/tokens", nil, bearer(toks["rw"]))
	wantCode(t, list, http.StatusOK, "list tokens")
	raw := readAll(t, list)
	_, secret, _ := api.ParseToken(ro.Token)
	if strings.Contains(raw, secret) || strings.Contains(raw, "hash") || !strings.Contains(raw, ro.ID) {
		t.Fatalf("listing shows secrets or lacks the token: %s", raw)
	}

	wantCode(t, do(t, base, http.MethodDelete, "/v1/channels/nft/tokens/"+ro.ID, nil, op), http.StatusNoContent, "revoke")
	wantCode(t, do(t, base, http.MethodGet, "/v1/channels/nft/kv/", nil, bearer(ro.Token)), http.StatusUnauthorized, "list with the revoked token")
	var infos []api.TokenInfo
	if err := json.Unmarshal([]byte(readAll(t, do(t, base, http.MethodGet, "/v1/channels/nft/tokens", nil, op))), &infos); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(infos, func(x api.TokenInfo) bool { return x.ID == ro.ID }); i < 0 || !infos[i].Revoked {
		t.Fatalf("after revoking, the listing says %+v", infos)
	}
	wantCode(t, do(t, base, http.MethodDelete, "/v1/channels/nft/tokens/00ff", nil, op), http.StatusNotFound, "revoke an unknown token")
	wantCode(t, do(t, base, http.MethodDelete, "/v1/channels/other/tokens/"+ro.ID, nil, op), http.StatusNotFound, "revoke through another channel")

	for _, bad := range []string{`{"scope":"admin"}`, `{"ttl":"-1h"}`, `{"ttl":"x"}`, `{"expires_at":"2001-01-01T00:00:00Z"}`,
		`{"ttl":"1h","expires_at":"2999-01-01T00:00:00Z"}`, `{"secret":"x"}`} {
		wantCode(t, do(t, base, http.MethodPost, "/v1/channels/nft/tokens", []byte(bad), op), http.StatusBadRequest, bad)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A signed link reads its key with no header, ranges included, until it
// expires or its token is revoked; a tampered one is refused.
func TestSignedLinks(t *testing.T) {
	f, base, toks := tokenServer(t)
	value := []byte("0123456789abcdef")
	wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/kv/media/v%20one.bin", value, bearer(toks["rw"])), http.StatusOK, "put")
	roTok := toks["ro"]
	resp := do(t, base, http.MethodPost, "/v1/channels/nft/sign", []byte(`{"key":"media/v one.bin","ttl":"10m"}`), bearer(roTok))
	wantCode(t, resp, http.StatusOK, "sign")
	link := decodeJSON[api.SignResponse](t, resp)
	if d := time.Until(link.ExpiresAt); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("link expires at %s", link.ExpiresAt)
	}

	got := do(t, base, http.MethodGet, link.URL, nil, nil)
	wantCode(t, got, http.StatusOK, "GET the link")
	if b := readAll(t, got); b != string(value) {
		t.Fatalf("link read %q", b)
	}
	part := do(t, base, http.MethodGet, link.URL, nil, http.Header{"Range": {"bytes=2-5"}})
	wantCode(t, part, http.StatusPartialContent, "a range of the link")
	if b := readAll(t, part); b != "2345" || part.Header.Get("Content-Range") != "bytes 2-5/16" {
		t.Fatalf("range read %q, Content-Range %q", b, part.Header.Get("Content-Range"))
	}
	wantCode(t, do(t, base, http.MethodHead, link.URL, nil, nil), http.StatusOK, "HEAD the link")

	u, err := url.Parse(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	with := func(path, k, v string) string {
		q2 := url.Values{}
		for name, vs := range q {
			q2[name] = vs
		}
		q2.Set(k, v)
		return path + "?" + q2.Encode()
	}
	sig := q.Get("sig")
	flipped := string(sig[0]^1) + sig[1:]
	exp, _ := strconv.ParseInt(q.Get("exp"), 10, 64)
	for what, path := range map[string]string{
		"tampered signature":  with(u.EscapedPath(), "sig", flipped),
		"later expiry":        with(u.EscapedPath(), "exp", strconv.FormatInt(exp+3600, 10)),
		"another key":         with("/v1/channels/nft/kv/media/other.bin", "sig", sig),
		"another channel":     with("/v1/channels/other/kv/media/v%20one.bin", "sig", sig),
		"another token":       with(u.EscapedPath(), "tok", "00ff"),
		"no signature":        u.EscapedPath() + "?exp=" + q.Get("exp") + "&tok=" + q.Get("tok"),
		"no token id":         u.EscapedPath() + "?exp=" + q.Get("exp") + "&sig=" + sig,
		"expiry not a number": with(u.EscapedPath(), "exp", "soon"),
	} {
		if got := do(t, base, http.MethodGet, path, nil, nil).StatusCode; got != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", what, got)
		}
	}
	// A link's parameters are for reads only.
	wantCode(t, do(t, base, http.MethodPut, link.URL, []byte("x"), nil), http.StatusUnauthorized, "PUT through a link")

	// An expired link: signed correctly, with an expiry in the past.
	id := q.Get("tok")
	rec, _ := f.Token(id)
	past := time.Now().Add(-time.Second).Unix()
	expired := u.EscapedPath() + "?" + url.Values{"exp": {strconv.FormatInt(past, 10)}, "tok": {id},
		"sig": {access.LinkSignature(rec.Hash, "nft", "kv/media/v one.bin", past)}}.Encode()
	wantCode(t, do(t, base, http.MethodGet, expired, nil, nil), http.StatusUnauthorized, "an expired link")

	// The operator token cannot sign: nothing could revoke its links.
	wantCode(t, do(t, base, http.MethodPost, "/v1/channels/nft/sign", []byte(`{"key":"a"}`), bearer(operatorToken)), http.StatusBadRequest, "sign with the operator token")
	wantCode(t, do(t, base, http.MethodPost, "/v1/channels/nft/sign", []byte(`{"key":"a","ttl":"720h"}`), bearer(roTok)), http.StatusBadRequest, "a ttl over 7 days")

	// Revoking the token that signed it ends the link.
	if err := f.mem.RevokeToken(context.Background(), "nft", id); err != nil {
		t.Fatal(err)
	}
	wantCode(t, do(t, base, http.MethodGet, link.URL, nil, nil), http.StatusUnauthorized, "the link of a revoked token")
}

// Keys under a public prefix are read without a token; settings show in
// the channel's description; writes still need a token.
func TestPublicPrefixes(t *testing.T) {
	_, base, toks := tokenServer(t)
	rw := bearer(toks["rw"])
	for _, k := range []string{"pub/a", "priv/a"} {
		wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/kv/"+k, []byte("v"), rw), http.StatusOK, "put "+k)
	}
	wantCode(t, do(t, base, http.MethodGet, "/v1/channels/nft/kv/pub/a", nil, nil), http.StatusUnauthorized, "before the setting")
	wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/settings", []byte(`{"public_prefixes":["pub/"]}`), bearer(toks["ro"])), http.StatusForbidden, "settings with a read-only token")
	wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/settings", []byte(`{"public_prefixes":["pub/"]}`), rw), http.StatusOK, "settings")
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/v1/channels/nft/kv/pub/a", http.StatusOK},
		{http.MethodHead, "/v1/channels/nft/kv/pub/a", http.StatusOK},
		{http.MethodGet, "/v1/channels/nft/kv/pub%2Fa", http.StatusOK},
		{http.MethodGet, "/v1/channels/nft/kv/priv/a", http.StatusUnauthorized},
		{http.MethodGet, "/v1/channels/nft/kv/?prefix=pub/x", http.StatusOK},
		{http.MethodGet, "/v1/channels/nft/kv/?prefix=pu", http.StatusUnauthorized},
		{http.MethodGet, "/v1/channels/nft/kv/", http.StatusUnauthorized},
		{http.MethodPut, "/v1/channels/nft/kv/pub/a", http.StatusUnauthorized},
		{http.MethodGet, "/v1/channels/other/kv/pub/a", http.StatusUnauthorized},
		{http.MethodGet, "/v1/channels/nft", http.StatusUnauthorized},
	} {
		if got := do(t, base, c.method, c.path, nil, nil).StatusCode; got != c.want {
			t.Errorf("%s %s without a token: %d, want %d", c.method, c.path, got, c.want)
		}
	}
	ch := decodeJSON[api.Channel](t, do(t, base, http.MethodGet, "/v1/channels/nft", nil, bearer(toks["ro"])))
	if ch.Settings == nil || !slices.Equal(ch.Settings.PublicPrefixes, []string{"pub/"}) {
		t.Fatalf("channel info shows settings %+v", ch.Settings)
	}
	for _, bad := range []string{`{"public_prefixes":[""]}`, `{"cors":{"allowed_origins":["https://a.example/path"]}}`,
		`{"cors":{"allowed_origins":["ftp://a.example"]}}`, `{"cors":{"allowed_methods":["PATCH"]}}`,
		`{"cors":{"allowed_headers":["a b"]}}`, `{"cors":{"max_age":-1}}`, `{"public":["x"]}`} {
		wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/settings", []byte(bad), rw), http.StatusBadRequest, bad)
	}
}

// CORS: a preflight is answered from the channel's policy without a token;
// actual requests from an allowed origin carry the headers, refusals too.
func TestCORS(t *testing.T) {
	_, base, toks := tokenServer(t)
	policy := `{"cors":{"allowed_origins":["https://app.example"],"allowed_methods":["GET","PUT"],"allowed_headers":["Authorization","Range"],"max_age":600}}`
	wantCode(t, do(t, base, http.MethodPut, "/v1/channels/nft/settings", []byte(policy), bearer(toks["rw"])), http.StatusOK, "settings")
	pre := func(ch, origin, method string) *http.Response {
		return do(t, base, http.MethodOptions, "/v1/channels/"+ch+"/kv/a", nil, http.Header{
			"Origin": {origin}, "Access-Control-Request-Method": {method}, "Access-Control-Request-Headers": {"authorization"},
		})
	}
	resp := pre("nft", "https://app.example", http.MethodPut)
	wantCode(t, resp, http.StatusNoContent, "preflight")
	for h, want := range map[string]string{
		"Access-Control-Allow-Origin":  "https://app.example",
		"Access-Control-Allow-Methods": "GET, PUT",
		"Access-Control-Allow-Headers": "Authorization, Range",
		"Access-Control-Max-Age":       "600",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("preflight %s = %q, want %q", h, got, want)
		}
	}
	wantCode(t, pre("nft", "https://evil.example", http.MethodPut), http.StatusForbidden, "preflight from another origin")
	wantCode(t, pre("nft", "https://app.example", http.MethodDelete), http.StatusForbidden, "preflight of a method not allowed")
	wantCode(t, pre("other", "https://app.example", http.MethodGet), http.StatusForbidden, "preflight on a channel without CORS")

	origin := http.Header{"Origin": {"https://app.example"}}
	refused := do(t, base, http.MethodGet, "/v1/channels/nft/kv/a", nil, origin)
	wantCode(t, refused, http.StatusUnauthorized, "no token")
	if refused.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatal("a refusal to an allowed origin lacks Access-Control-Allow-Origin: the page cannot read why")
	}
	h := bearer(toks["ro"])
	h.Set("Origin", "https://app.example")
	ok := do(t, base, http.MethodGet, "/v1/channels/nft/kv/?limit=1", nil, h)
	wantCode(t, ok, http.StatusOK, "list from the allowed origin")
	if !strings.Contains(ok.Header.Get("Access-Control-Expose-Headers"), api.HeaderIndex) {
		t.Fatalf("exposed headers %q", ok.Header.Get("Access-Control-Expose-Headers"))
	}
	h.Set("Origin", "https://evil.example")
	if got := do(t, base, http.MethodGet, "/v1/channels/nft/kv/?limit=1", nil, h); got.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("another origin got Access-Control-Allow-Origin")
	}
}

// What a channel token costs a request over the operator token: the
// admission step only (a lookup in the node's meta copy and a hash).
func BenchmarkAdmit(b *testing.B) {
	f := newFake("nft")
	s := New(Config{Backend: f, Token: operatorToken})
	tok, err := f.mem.IssueToken(context.Background(), "nft", fsm.ScopeReadOnly, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	rt, ch, rawKey := s.match("/v1/channels/nft/kv/k")
	for _, c := range []struct{ name, token string }{{"operator", operatorToken}, {"channel", tok.Token}} {
		b.Run(c.name, func(b *testing.B) {
			r, _ := http.NewRequest(http.MethodGet, "/v1/channels/nft/kv/k", nil)
			r.Header.Set("Authorization", "Bearer "+c.token)
			w := httptest.NewRecorder()
			for b.Loop() {
				if !s.admit(w, r, rt, ch, rawKey, "/v1/channels/nft/kv/k") {
					b.Fatal("refused")
				}
			}
		})
	}
}

// A request forwarded to a node of the previous version carries the CORS
// headers of the node the browser talked to, once: the node that serves it adds none of its own (two
// Access-Control-Allow-Origin values make a browser refuse the answer).
func TestCORSHeadersOnceThroughAForward(t *testing.T) {
	a, b := startNode(t, "a", operatorToken, "nft"), startNode(t, "b", operatorToken, "nft")
	link(t, a, b)
	st := api.ChannelSettings{CORS: &api.CORS{AllowedOrigins: []string{"https://app.example"}}}
	for _, n := range []*node{a, b} {
		if err := n.f.mem.SetChannelSettings(context.Background(), "nft", st); err != nil {
			t.Fatal(err)
		}
	}
	a.f.get = func(context.Context, string, []byte, shard.ReadLevel) (fsm.Entry, bool, uint64, error) {
		return fsm.Entry{}, false, 0, oldNode(b, shard.ErrNotLeader)
	}
	h := bearer(operatorToken)
	h.Set("Origin", "https://app.example")
	resp := do(t, a.public, http.MethodGet, "/v1/channels/nft/kv/k", nil, h)
	if b.f.reads.Load() == 0 {
		t.Fatal("the read was not forwarded")
	}
	if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 {
		t.Fatalf("Access-Control-Allow-Origin %q, want one value", got)
	}
}
