package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// Limits of channel settings.
const (
	maxSettingsEntries = 32
	maxCORSMaxAge      = 86400
)

// createToken serves POST /v1/channels/{ch}/tokens: 201 with the token and
// its secret, shown this once.
func (s *Server) createToken(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.TokenRequest
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	scope := b.Scope
	switch scope {
	case "":
		scope = fsm.ScopeReadOnly
	case fsm.ScopeReadOnly, fsm.ScopeReadWrite:
	default:
		return nil, invalid("scope must be %q or %q, not %q", fsm.ScopeReadOnly, fsm.ScopeReadWrite, b.Scope)
	}
	now := time.Now()
	var expires time.Time
	switch {
	case b.TTL != "" && b.ExpiresAt != "":
		return nil, invalid("give ttl or expires_at, not both")
	case b.TTL != "":
		d, err := time.ParseDuration(b.TTL)
		if err != nil || d <= 0 {
			return nil, invalid("ttl %q must be a positive Go duration such as 24h", b.TTL)
		}
		expires = now.Add(d)
	case b.ExpiresAt != "":
		t, err := time.Parse(time.RFC3339, b.ExpiresAt)
		if err != nil {
			return nil, invalid("expires_at %q must be an RFC 3339 time such as 2030-01-02T15:04:05Z", b.ExpiresAt)
		}
		if !t.After(now) {
			return nil, invalid("expires_at %s is not in the future", b.ExpiresAt)
		}
		expires = t
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	tok, err := s.b.IssueToken(ctx, req.ch, scope, expires)
	if err != nil {
		return nil, fmt.Errorf("issue a token of channel %s: %w", req.ch, err)
	}
	return jsonResponse(http.StatusCreated, tok), nil
}

// listTokens serves GET /v1/channels/{ch}/tokens: ids, scopes and times,
// never secrets or hashes.
func (s *Server) listTokens(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ts, err := s.b.Tokens(ctx, req.ch)
	if err != nil {
		return nil, fmt.Errorf("tokens of channel %s: %w", req.ch, err)
	}
	if ts == nil {
		ts = []api.TokenInfo{}
	}
	return jsonResponse(http.StatusOK, ts), nil
}

// revokeToken serves DELETE /v1/channels/{ch}/tokens/{id}: 204, also for a
// token revoked already.
func (s *Server) revokeToken(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	id, err := url.PathUnescape(req.rawKey)
	if err != nil || id == "" || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, refuse(errRouteNotFound, "no token %q: token ids are lower-case hex", req.rawKey)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.b.RevokeToken(ctx, req.ch, id); err != nil {
		return nil, fmt.Errorf("revoke token %s of channel %s: %w", id, req.ch, err)
	}
	return &response{status: http.StatusNoContent}, nil
}

// sign serves POST /v1/channels/{ch}/sign: a link to a key that works
// without a header until it expires or the signing token is revoked.
func (s *Server) sign(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.SignRequest
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	// A link names "kv/<key>" or "files/<path>" (auth.go's signedLink).
	var resource, link string
	switch {
	case b.Key != "" && b.File != "":
		return nil, invalid("sign a key or a file, not both")
	case b.File != "":
		if err := fsm.ValidatePath(b.File); err != nil {
			return nil, err
		}
		resource, link = "files/"+b.File, "/files/"+api.EscapeKey(b.File)
	default:
		if err := validateKey([]byte(b.Key), "key"); err != nil {
			return nil, err
		}
		resource, link = "kv/"+b.Key, "/kv/"+api.EscapeKey(b.Key)
	}
	ttl := defaultLinkTTL
	if b.TTL != "" {
		d, err := time.ParseDuration(b.TTL)
		if err != nil || d < time.Second || d > maxLinkTTL {
			return nil, invalid("ttl %q must be a Go duration from 1s to %s", b.TTL, maxLinkTTL)
		}
		ttl = d
	}
	cred, present, err := s.credential(req.r)
	if err != nil {
		return nil, err
	}
	if !present || cred.Operator {
		// A link is revoked with the token that signed it; the operator
		// token cannot be revoked that way.
		return nil, invalid("sign with a token of channel %s (POST /v1/channels/%s/tokens issues one), not the operator token", req.ch, req.ch)
	}
	exp := time.Now().Add(ttl).Truncate(time.Second)
	if t := cred.Token; t.ExpiresAt != 0 && exp.UnixMilli() > t.ExpiresAt {
		exp = time.UnixMilli(t.ExpiresAt).Truncate(time.Second) // the link dies with its token anyway
	}
	sig := access.LinkSignature(cred.Token.Hash, req.ch, resource, exp.Unix())
	q := url.Values{"exp": {strconv.FormatInt(exp.Unix(), 10)}, "sig": {sig}, "tok": {cred.Token.ID}}
	return jsonResponse(http.StatusOK, api.SignResponse{
		URL:       "/v1/channels/" + req.ch + link + "?" + q.Encode(),
		ExpiresAt: exp.UTC(),
	}), nil
}

// putSettings serves PUT /v1/channels/{ch}/settings: the channel's public
// prefixes and CORS, replaced as a whole.
func (s *Server) putSettings(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.ChannelSettings
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	if err := validSettings(b); err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.b.SetChannelSettings(ctx, req.ch, b); err != nil {
		return nil, fmt.Errorf("settings of channel %s: %w", req.ch, err)
	}
	return jsonResponse(http.StatusOK, b), nil
}

var corsMethods = []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete}

func validSettings(b api.ChannelSettings) error {
	if len(b.PublicPrefixes) > maxSettingsEntries {
		return invalid("at most %d public_prefixes", maxSettingsEntries)
	}
	for i, p := range b.PublicPrefixes {
		if p == "" {
			return invalid("public_prefixes[%d] is empty: that would make every key public", i)
		}
		if err := checkKeyText([]byte(p), fmt.Sprintf("public_prefixes[%d]", i)); err != nil {
			return err
		}
	}
	c := b.CORS
	if c == nil {
		return nil
	}
	if len(c.AllowedOrigins) > maxSettingsEntries || len(c.AllowedHeaders) > maxSettingsEntries || len(c.AllowedMethods) > len(corsMethods) {
		return invalid("at most %d allowed_origins and allowed_headers", maxSettingsEntries)
	}
	for i, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return invalid("allowed_origins[%d] %q must be \"*\" or an origin such as https://app.example", i, shorten(o))
		}
	}
	for i, m := range c.AllowedMethods {
		if !slices.Contains(corsMethods, m) {
			return invalid("allowed_methods[%d] %q must be one of %s", i, shorten(m), strings.Join(corsMethods, ", "))
		}
	}
	for i, h := range c.AllowedHeaders {
		if h == "" || strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return invalid("allowed_headers[%d] %q is not a header name", i, shorten(h))
		}
	}
	if c.MaxAge < 0 || c.MaxAge > maxCORSMaxAge {
		return invalid("max_age must be from 0 to %d seconds", maxCORSMaxAge)
	}
	return nil
}
