package server

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
)

// Who may call what (docs/api.md "Authentication"; the rules and the
// checks live in package access, which the node serving a route call uses
// too). Every endpoint of the route table names its rule;
// TestAccessEveryRoute fails on one that does not, and the server treats a
// missing rule as operator-only.
const (
	accessUnset    = access.RuleUnset
	accessPublic   = access.RulePublic   // anyone: GET /v1/health
	accessOperator = access.RuleOperator // the operator token: cluster management
	accessRead     = access.RuleRead     // the operator token or any token of the channel (and, on key reads, public prefixes and signed links)
	accessWrite    = access.RuleWrite    // the operator token or a read-write token of the channel
)

// admit is the one admission step of every request, run before routing
// answers anything else: CORS (a preflight is answered here), then who the
// caller is and whether the endpoint's rule lets it in. It writes the
// refusal itself and returns false when the request goes no further.
// Admitted, the request's context carries the client's proof (proofOf),
// so that a node serving a route call for it checks the client again.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, rt *route, ch, rawKey, path string) bool {
	// A forwarded request's CORS headers are the first node's: the proxy
	// adds the answer's headers to them, and a browser refuses two
	// Access-Control-Allow-Origin values.
	if ch != "" && r.Header.Get("Origin") != "" && !fromPeer(r) {
		if !s.cors(w, r, ch) {
			return false
		}
	}
	if s.check.Open() || !needsAuth(r, path) {
		return true
	}
	ep, known := endpointOf(rt, r.Method)
	rule := ep.access
	if !known {
		// No such route or method: a channel's token may learn that
		// (404, 405) about its own channel's paths.
		rule = accessRead
		if rt == nil {
			ch = pathChannel(path)
		}
	}
	cred, present, err := s.credential(r)
	switch {
	case err != nil:
		writeError(w, err)
		return false
	case present:
		if err := access.Allow(cred, rule, ch, r.Method); err != nil {
			writeError(w, err)
			return false
		}
		return true
	case rule == accessPublic:
		return true
	case known && rule == accessRead && s.anonymousRead(r, rt, ch, rawKey, ep):
		return true
	}
	writeError(w, refuse(errUnauthorized, "missing or wrong bearer token"))
	return false
}

// pathChannel is the channel segment of a path under /v1/channels/ that no
// route matched ("" for any other path).
func pathChannel(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/channels/")
	if !ok {
		return ""
	}
	ch, _, _ := strings.Cut(rest, "/")
	return ch
}

// endpointOf returns the endpoint that serves method on rt (HEAD is GET).
func endpointOf(rt *route, method string) (endpoint, bool) {
	if rt == nil {
		return endpoint{}, false
	}
	if method == http.MethodHead {
		method = http.MethodGet
	}
	ep, ok := rt.methods[method]
	return ep, ok
}

// credential reads the bearer token: present is false without one; err
// (401) when it is neither the operator token nor a valid channel token
// (unknown, wrong secret, revoked, expired).
func (s *Server) credential(r *http.Request) (cred access.Credential, present bool, err error) {
	tok, present, err := bearerOf(r)
	if !present || err != nil {
		return access.Credential{}, present, err
	}
	cred, err = s.check.Bearer(tok, time.Now())
	return cred, true, err
}

// bearerOf returns the request's bearer token: present is false without an
// Authorization header; err (401) when it is not a bearer token.
func bearerOf(r *http.Request) (tok string, present bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, nil
	}
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", true, refuse(errUnauthorized, "the Authorization header is not a bearer token")
	}
	return strings.TrimSpace(h[len(scheme):]), true, nil
}

// proofOf is the client's credential as this node received it, for the
// route calls made for the request: its bearer token, else a signed
// link's query, else none (a public prefix; an open API).
func proofOf(r *http.Request) access.Proof {
	if tok, present, err := bearerOf(r); present && err == nil {
		return access.Proof{Kind: access.ProofBearer, Bearer: tok}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if q, err := url.ParseQuery(r.URL.RawQuery); err == nil && q.Has("sig") {
			return access.Proof{Kind: access.ProofLink, Link: access.Link{Token: q.Get("tok"), Exp: q.Get("exp"), Sig: q.Get("sig")}}
		}
	}
	return access.Proof{Kind: access.ProofAnonymous}
}

// anonymousRead lets a request without a token read a key through a
// signed link, or a key or listing under one of the channel's public
// prefixes.
func (s *Server) anonymousRead(r *http.Request, rt *route, ch, rawKey string, ep endpoint) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	q, err := parseQuery(r.URL.RawQuery, ep.params)
	if err != nil {
		return false // the query is refused later, or is no credential
	}
	switch rt.template {
	case routeKV:
		key, err := parseKey(rawKey)
		if err != nil {
			return false
		}
		if q.Has("sig") || q.Has("tok") || q.Has("exp") {
			l := access.Link{Token: q.Get("tok"), Exp: q.Get("exp"), Sig: q.Get("sig")}
			return s.check.SignedLink(l, ch, access.KVResource(key), time.Now())
		}
		return s.check.Public(ch, string(key))
	case routeKVList:
		return s.check.Public(ch, q.Get("prefix"))
	case routeFile:
		path, err := api.UnescapeKey(rawKey)
		if err != nil || !(q.Has("sig") || q.Has("tok") || q.Has("exp")) {
			return false
		}
		l := access.Link{Token: q.Get("tok"), Exp: q.Get("exp"), Sig: q.Get("sig")}
		return s.check.SignedLink(l, ch, access.FileResource(path), time.Now())
	}
	return false
}

// Signed links (docs/api.md "Signed links"; access.LinkSignature).

// maxLinkTTL bounds a signed link's life (as S3's presigned URLs).
const (
	defaultLinkTTL = time.Hour
	maxLinkTTL     = 7 * 24 * time.Hour
)
