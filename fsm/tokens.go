package fsm

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"slices"
)

// Channel tokens and channel settings in the meta state (docs/api.md
// "Channel tokens"). The meta state keeps a token's SHA-256 hash, never its
// secret; the node that proposes a token draws the secret and writes every
// time the record holds (created, expires) into the command, so applying
// it reads no clock.

// Token scopes.
const (
	ScopeReadOnly  = "read-only"
	ScopeReadWrite = "read-write"
)

// MaxTokensPerChannel bounds a channel's token records, revoked ones
// included; issuing one more first drops the records already revoked or
// expired as of the new token's creation time.
const MaxTokensPerChannel = 1000

// Token sentinel errors, returned in MetaResult.Err.
var (
	ErrTokenNotFound  = errors.New("fsm: token not found")
	ErrTokenExists    = errors.New("fsm: token id already exists")
	ErrTooManyTokens  = errors.New("fsm: too many tokens in the channel")
	ErrChannelChanged = errors.New("fsm: the channel was deleted or created again")
)

// TokenRecord is one channel token. Times are Unix milliseconds written by
// the proposer; ExpiresAt 0 never expires.
type TokenRecord struct {
	ID      string `json:"id"`
	Channel string `json:"channel"`
	// GroupID is the channel's group id when the token was issued: a
	// token never outlives its channel's incarnation.
	GroupID     uint64 `json:"group_id"`
	Scope       string `json:"scope"`
	Hash        []byte `json:"hash"` // HashSecret of the secret
	CreatedAt   int64  `json:"created_at"`
	ExpiresAt   int64  `json:"expires_at,omitempty"`
	Revoked     bool   `json:"revoked,omitempty"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// HashSecret is what the meta state keeps of a token's secret.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Expired reports whether the token has expired at nowMs (Unix ms).
func (t *TokenRecord) Expired(nowMs int64) bool {
	return t.ExpiresAt != 0 && nowMs >= t.ExpiresAt
}

// ChannelSettings are what a channel lets browsers and anonymous readers
// do: keys under PublicPrefixes are readable without a token, and CORS
// answers preflights and adds its headers for the allowed origins.
type ChannelSettings struct {
	PublicPrefixes []string `json:"public_prefixes,omitempty"`
	CORS           *CORS    `json:"cors,omitempty"`
}

// CORS is a channel's cross-origin policy.
type CORS struct {
	AllowedOrigins []string `json:"allowed_origins,omitempty"` // "*" allows any
	AllowedMethods []string `json:"allowed_methods,omitempty"`
	AllowedHeaders []string `json:"allowed_headers,omitempty"`
	MaxAge         int      `json:"max_age,omitempty"` // seconds
}

func cloneSettings(s *ChannelSettings) *ChannelSettings {
	if s == nil {
		return nil
	}
	cp := &ChannelSettings{PublicPrefixes: slices.Clone(s.PublicPrefixes)}
	if s.CORS != nil {
		c := *s.CORS
		c.AllowedOrigins = slices.Clone(s.CORS.AllowedOrigins)
		c.AllowedMethods = slices.Clone(s.CORS.AllowedMethods)
		c.AllowedHeaders = slices.Clone(s.CORS.AllowedHeaders)
		cp.CORS = &c
	}
	return cp
}

// IssueToken records a new token of a channel.
type IssueToken struct {
	Token TokenRecord `json:"token"`
}

// RevokeToken marks a channel's token revoked; the record stays, so that
// listings show it, until a later IssueToken needs its room.
type RevokeToken struct {
	Channel string `json:"channel"`
	ID      string `json:"id"`
}

// SetChannelSettings replaces a channel's settings.
type SetChannelSettings struct {
	Channel  string          `json:"channel"`
	Settings ChannelSettings `json:"settings"`
}

func (*IssueToken) metaType() byte         { return metaIssueToken }
func (*RevokeToken) metaType() byte        { return metaRevokeToken }
func (*SetChannelSettings) metaType() byte { return metaSetChannelSettings }

// applyIssueToken records c.Token; under mu.
func (m *Meta) applyIssueToken(index uint64, c *IssueToken, res *MetaResult) {
	t := c.Token
	ch, ok := m.st.Channels[t.Channel]
	switch {
	case !ok:
		res.Err = ErrChannelNotFound
		return
	case ch.GroupID != t.GroupID:
		res.Err = ErrChannelChanged
		return
	}
	if _, ok := m.st.Tokens[t.ID]; ok {
		res.Err = ErrTokenExists
		return
	}
	if m.channelTokens(t.Channel) >= MaxTokensPerChannel {
		// Deleting every match is the same whatever order the map
		// yields them in.
		for id, old := range m.st.Tokens {
			if old.Channel == t.Channel && (old.Revoked || old.Expired(t.CreatedAt)) {
				delete(m.st.Tokens, id)
			}
		}
		if m.channelTokens(t.Channel) >= MaxTokensPerChannel {
			res.Err = ErrTooManyTokens
			return
		}
	}
	t.Hash = slices.Clone(t.Hash)
	t.CreateIndex, t.ModifyIndex = index, index
	m.st.Tokens[t.ID] = &t
}

func (m *Meta) channelTokens(channel string) int {
	n := 0
	for _, t := range m.st.Tokens {
		if t.Channel == channel {
			n++
		}
	}
	return n
}

// dropTokens forgets every token of a deleted channel; under mu.
func (m *Meta) dropTokens(channel string) {
	for id, t := range m.st.Tokens {
		if t.Channel == channel {
			delete(m.st.Tokens, id)
		}
	}
}

// Token returns a copy of one token record from this replica's state, the
// check every request with a channel token makes: no Raft round-trip.
func (m *Meta) Token(id string) (TokenRecord, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t, ok := m.st.Tokens[id]
	if !ok {
		return TokenRecord{}, false
	}
	cp := *t
	cp.Hash = slices.Clone(t.Hash)
	return cp, true
}

// Tokens returns copies of a channel's token records, sorted by creation.
func (m *Meta) Tokens(channel string) []TokenRecord {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []TokenRecord
	for _, t := range m.st.Tokens {
		if t.Channel == channel {
			cp := *t
			cp.Hash = slices.Clone(t.Hash)
			out = append(out, cp)
		}
	}
	slices.SortFunc(out, func(a, b TokenRecord) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
	return out
}
