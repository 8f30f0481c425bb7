package servertest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
)

// Channel tokens and settings, kept as the meta state keeps them (hashed),
// with the checks cluster.Node makes.

// IssueToken records a new token of channel.
func (m *Memory) IssueToken(_ context.Context, channel, scope string, expires time.Time) (api.TokenCreated, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(channel)
	if err != nil {
		return api.TokenCreated{}, err
	}
	return m.issue(ch, scope, expires), nil
}

// issue records a token of ch; under mu.
func (m *Memory) issue(ch *memChannel, scope string, expires time.Time) api.TokenCreated {
	var b [40]byte
	_, _ = rand.Read(b[:])
	id, secret := hex.EncodeToString(b[:8]), base64.RawURLEncoding.EncodeToString(b[8:])
	rec := fsm.TokenRecord{ID: id, Channel: ch.info.Name, GroupID: ch.info.GroupID, Scope: scope,
		Hash: fsm.HashSecret(secret), CreatedAt: time.Now().UnixMilli()}
	if !expires.IsZero() {
		rec.ExpiresAt = expires.UnixMilli()
	}
	if m.tokens == nil {
		m.tokens = map[string]*fsm.TokenRecord{}
	}
	m.tokens[id] = &rec
	m.tokenOrder = append(m.tokenOrder, id)
	return api.TokenCreated{TokenInfo: info(rec), Token: api.FormatToken(id, secret)}
}

func info(t fsm.TokenRecord) api.TokenInfo {
	out := api.TokenInfo{ID: t.ID, Scope: t.Scope, CreatedAt: time.UnixMilli(t.CreatedAt).UTC(), Revoked: t.Revoked}
	if t.ExpiresAt != 0 {
		e := time.UnixMilli(t.ExpiresAt).UTC()
		out.ExpiresAt = &e
	}
	return out
}

// Tokens lists channel's tokens in the order they were issued.
func (m *Memory) Tokens(_ context.Context, channel string) ([]api.TokenInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.channel(channel); err != nil {
		return nil, err
	}
	out := []api.TokenInfo{}
	for _, id := range m.tokenOrder {
		if t, ok := m.tokens[id]; ok && t.Channel == channel {
			out = append(out, info(*t))
		}
	}
	return out, nil
}

// RevokeToken marks a token revoked.
func (m *Memory) RevokeToken(_ context.Context, channel, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[id]
	if !ok || t.Channel != channel {
		return fmt.Errorf("%w: %q in channel %q", cluster.ErrTokenNotFound, id, channel)
	}
	t.Revoked = true
	return nil
}

// SetChannelSettings replaces channel's settings.
func (m *Memory) SetChannelSettings(_ context.Context, channel string, s api.ChannelSettings) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, err := m.channel(channel)
	if err != nil {
		return err
	}
	st := cluster.FSMSettings(s)
	ch.settings = &st
	return nil
}

// Token returns a token's record.
func (m *Memory) Token(id string) (fsm.TokenRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[id]
	if !ok {
		return fsm.TokenRecord{}, false
	}
	cp := *t
	cp.Hash = slices.Clone(t.Hash)
	return cp, true
}

// ChannelSettings returns channel's settings, nil when none.
func (m *Memory) ChannelSettings(channel string) *fsm.ChannelSettings {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.channels[channel]
	if !ok || ch.settings == nil {
		return nil
	}
	cp := *ch.settings
	return &cp
}

// dropTokens forgets a deleted channel's tokens; under mu.
func (m *Memory) dropTokens(channel string) {
	for id, t := range m.tokens {
		if t.Channel == channel {
			delete(m.tokens, id)
		}
	}
}
