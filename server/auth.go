package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// Who may call what (docs/api.md "Authentication"). Every endpoint of the
// route table names its rule; TestAccessEveryRoute fails on one that does
// not, and the server treats a missing rule as operator-only.
type access int

const (
	accessUnset    access = iota
	accessPublic          // anyone: GET /v1/health
	accessOperator        // the operator token: cluster management
	accessRead            // the operator token or any token of the channel (and, on key reads, public prefixes and signed links)
	accessWrite           // the operator token or a read-write token of the channel
)

// credential is what a request's bearer token turned out to be.
type credential struct {
	operator bool
	token    fsm.TokenRecord // a channel token, when !operator
}

// admit is the one admission step of every request, run before routing
// answers anything else: CORS (a preflight is answered here), then who the
// caller is and whether the endpoint's rule lets it in. It writes the
// refusal itself and returns false when the request goes no further.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, rt *route, ch, rawKey, path string) bool {
	// A forwarded request's CORS headers are the first node's: the proxy
	// adds the answer's headers to them, and a browser refuses two
	// Access-Control-Allow-Origin values.
	if ch != "" && r.Header.Get("Origin") != "" && !fromPeer(r) {
		if !s.cors(w, r, ch) {
			return false
		}
	}
	if !s.hasToken || !needsAuth(r, path) {
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
	case present && cred.operator:
		return true
	case present:
		return s.allowToken(w, cred.token, rule, ch, r.Method)
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

func (s *Server) allowToken(w http.ResponseWriter, t fsm.TokenRecord, rule access, ch, method string) bool {
	switch {
	case rule == accessPublic:
		return true
	case rule != accessRead && rule != accessWrite:
		writeError(w, refuse(errForbidden, "a channel token cannot call %s on this path: it needs the operator token", method))
	case ch != t.Channel:
		writeError(w, refuse(errForbidden, "token %s belongs to channel %s, not %q", t.ID, t.Channel, ch))
	case rule == accessWrite && t.Scope != fsm.ScopeReadWrite:
		writeError(w, refuse(errForbidden, "token %s is %s: %s here needs a read-write token", t.ID, t.Scope, method))
	default:
		return true
	}
	return false
}

// credential reads the bearer token: present is false without one; err
// (401) when it is neither the operator token nor a valid channel token
// (unknown, wrong secret, revoked, expired). A channel token is checked
// against this node's copy of the meta state: no Raft round-trip.
func (s *Server) credential(r *http.Request) (cred credential, present bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return credential{}, false, nil
	}
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return credential{}, true, refuse(errUnauthorized, "the Authorization header is not a bearer token")
	}
	tok := strings.TrimSpace(h[len(scheme):])
	// Hashes of equal length: not even the length leaks.
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], s.token[:]) == 1 {
		return credential{operator: true}, true, nil
	}
	id, secret, ok := api.ParseToken(tok)
	if !ok {
		return credential{}, true, refuse(errUnauthorized, "missing or wrong bearer token")
	}
	t, err := s.liveToken(id, time.Now())
	if err != nil {
		return credential{}, true, err
	}
	if subtle.ConstantTimeCompare(fsm.HashSecret(secret), t.Hash) != 1 {
		return credential{}, true, refuse(errUnauthorized, "missing or wrong bearer token")
	}
	return credential{token: t}, true, nil
}

// liveToken returns a token that exists, is not revoked and not expired.
func (s *Server) liveToken(id string, now time.Time) (fsm.TokenRecord, error) {
	t, ok := s.b.Token(id)
	switch {
	case !ok:
		return t, refuse(errUnauthorized, "missing or wrong bearer token")
	case t.Revoked:
		return t, refuse(errUnauthorized, "token %s was revoked", id)
	case t.Expired(now.UnixMilli()):
		return t, refuse(errUnauthorized, "token %s expired at %s", id, time.UnixMilli(t.ExpiresAt).UTC().Format(time.RFC3339))
	}
	return t, nil
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
			return s.signedLink(q.Get("tok"), q.Get("exp"), q.Get("sig"), ch, "kv/"+string(key), time.Now())
		}
		return s.public(ch, string(key))
	case routeKVList:
		return s.public(ch, q.Get("prefix"))
	case routeFile:
		path, err := api.UnescapeKey(rawKey)
		if err != nil || !(q.Has("sig") || q.Has("tok") || q.Has("exp")) {
			return false
		}
		return s.signedLink(q.Get("tok"), q.Get("exp"), q.Get("sig"), ch, "files/"+path, time.Now())
	}
	return false
}

// public says whether key (or a listing prefix) lies under one of the
// channel's public prefixes, as this node's meta copy has them.
func (s *Server) public(ch, key string) bool {
	st := s.b.ChannelSettings(ch)
	if st == nil {
		return false
	}
	for _, p := range st.PublicPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Signed links (docs/api.md "Signed links"). A link names a resource of a
// channel — today "kv/<key>", the decoded key; a file path will be
// "files/<path>" the same way — and is signed with a key derived from the
// signing token's stored hash, so revoking (or the expiry of) that token
// ends every link it signed, and the secret itself is never needed.

// maxLinkTTL bounds a signed link's life (as S3's presigned URLs).
const (
	defaultLinkTTL = time.Hour
	maxLinkTTL     = 7 * 24 * time.Hour
)

// linkSignature is the signature of a link to resource of channel until
// exp (Unix seconds), by the token whose stored hash is hash. The resource
// comes last, so a key holding newlines cannot shift the other fields.
func linkSignature(hash []byte, channel, resource string, exp int64) string {
	kdf := hmac.New(sha256.New, hash)
	kdf.Write([]byte("shardnet signed link v1"))
	mac := hmac.New(sha256.New, kdf.Sum(nil))
	mac.Write([]byte("v1\n" + strconv.FormatInt(exp, 10) + "\n" + channel + "\n" + resource))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// signedLink checks a link's token id, expiry and signature.
func (s *Server) signedLink(id, exp, sig, ch, resource string, now time.Time) bool {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || id == "" || sig == "" || now.Unix() >= e {
		return false
	}
	t, err := s.liveToken(id, now)
	if err != nil || t.Channel != ch {
		return false
	}
	want := linkSignature(t.Hash, ch, resource, e)
	return hmac.Equal([]byte(want), []byte(sig))
}
