package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Channel tokens and settings (docs/api.md "Channel tokens"). Writes go
// through the meta group, on its leader (a redirect otherwise, which the
// server forwards); checks read this node's copy of the meta state, so a
// request pays no Raft round-trip for its token, and a revocation takes
// effect on a node once its copy has applied it.

// newToken draws a token's id (64 bits) and secret (256 bits).
func newToken() (id, secret string, err error) {
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("cluster: draw a token: %w", err)
	}
	return hex.EncodeToString(b[:8]), base64.RawURLEncoding.EncodeToString(b[8:]), nil
}

// tokensSupported says whether the cluster version lets tokens be issued.
func (n *Node) tokensSupported() bool {
	return n.meta.fsm.ClusterVersion() >= fsm.MetaVersion(&fsm.IssueToken{})
}

// IssueToken records a new token of channel with scope, expiring at
// expires (zero: never), and returns it with its secret.
func (n *Node) IssueToken(ctx context.Context, channel, scope string, expires time.Time) (api.TokenCreated, error) {
	var tok api.TokenCreated
	err := n.route.do(ctx, "issue_token", func(ctx context.Context) (err error) {
		tok, err = n.issueTokenHere(ctx, channel, scope, expires)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		tok, err = n.route.issueToken(ctx, re, channel, scope, expires)
		return n.seeMetaWrite(ctx, err)
	})
	return tok, err
}

// issueTokenHere is IssueToken on this node, which must lead the meta
// group (else a redirect to the leader).
func (n *Node) issueTokenHere(ctx context.Context, channel, scope string, expires time.Time) (api.TokenCreated, error) {
	if n.meta.raft.State() != raft.Leader {
		return api.TokenCreated{}, n.metaRedirect()
	}
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		return api.TokenCreated{}, fmt.Errorf("%w: %q", ErrChannelNotFound, channel)
	}
	return n.issueToken(ctx, ch, scope, expires)
}

func (n *Node) issueToken(ctx context.Context, ch fsm.ChannelRecord, scope string, expires time.Time) (api.TokenCreated, error) {
	id, secret, err := newToken()
	if err != nil {
		return api.TokenCreated{}, err
	}
	rec := fsm.TokenRecord{
		ID: id, Channel: ch.Name, GroupID: ch.GroupID, Scope: scope,
		Hash: fsm.HashSecret(secret), CreatedAt: time.Now().UnixMilli(),
	}
	if !expires.IsZero() {
		rec.ExpiresAt = expires.UnixMilli()
	}
	res, err := n.proposeMeta(ctx, &fsm.IssueToken{Token: rec})
	if err != nil {
		return api.TokenCreated{}, err
	}
	switch {
	case errors.Is(res.Err, fsm.ErrChannelNotFound), errors.Is(res.Err, fsm.ErrChannelChanged):
		return api.TokenCreated{}, fmt.Errorf("%w: %q", ErrChannelNotFound, ch.Name)
	case errors.Is(res.Err, fsm.ErrTooManyTokens):
		return api.TokenCreated{}, fmt.Errorf("%w: %q holds %d token records; revoke some", ErrTooManyTokens, ch.Name, fsm.MaxTokensPerChannel)
	case res.Err != nil:
		// ErrTokenExists: 64 random bits met an id in use. Nothing was
		// recorded; the client may ask again.
		return api.TokenCreated{}, fmt.Errorf("cluster: issue a token of %q: %w", ch.Name, res.Err)
	}
	n.log.Info("channel token issued", "channel", ch.Name, "token", id, "scope", scope)
	return api.TokenCreated{TokenInfo: tokenInfo(rec), Token: api.FormatToken(id, secret)}, nil
}

func tokenInfo(t fsm.TokenRecord) api.TokenInfo {
	out := api.TokenInfo{ID: t.ID, Scope: t.Scope, CreatedAt: time.UnixMilli(t.CreatedAt).UTC(), Revoked: t.Revoked}
	if t.ExpiresAt != 0 {
		e := time.UnixMilli(t.ExpiresAt).UTC()
		out.ExpiresAt = &e
	}
	return out
}

// Tokens lists channel's tokens from this node's copy of the meta state.
func (n *Node) Tokens(ctx context.Context, channel string) ([]api.TokenInfo, error) {
	if _, err := n.knownChannel(ctx, channel); err != nil {
		return nil, err
	}
	out := []api.TokenInfo{}
	for _, t := range n.meta.fsm.Tokens(channel) {
		out = append(out, tokenInfo(t))
	}
	return out, nil
}

// knownChannel returns channel's record, catching up with the meta leader
// before it says the channel does not exist (as Channel does).
func (n *Node) knownChannel(ctx context.Context, channel string) (fsm.ChannelRecord, error) {
	if err := n.metaSound(); err != nil {
		return fsm.ChannelRecord{}, err
	}
	if ch, ok := n.meta.fsm.Channel(channel); ok {
		return ch, nil
	}
	if err := n.metaSync(ctx); err != nil {
		return fsm.ChannelRecord{}, fmt.Errorf("%w (looking for channel %q)", err, channel)
	}
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		return fsm.ChannelRecord{}, fmt.Errorf("%w: %q", ErrChannelNotFound, channel)
	}
	return ch, nil
}

// RevokeToken marks one of channel's tokens revoked.
func (n *Node) RevokeToken(ctx context.Context, channel, id string) error {
	return n.route.do(ctx, "revoke_token", func(ctx context.Context) error {
		return n.revokeTokenHere(ctx, channel, id)
	}, func(ctx context.Context, re *shard.RedirectError) error {
		return n.seeMetaWrite(ctx, n.route.revokeToken(ctx, re, channel, id))
	})
}

func (n *Node) revokeTokenHere(ctx context.Context, channel, id string) error {
	if n.meta.raft.State() != raft.Leader {
		return n.metaRedirect()
	}
	res, err := n.proposeMeta(ctx, &fsm.RevokeToken{Channel: channel, ID: id})
	if err != nil {
		return err
	}
	if errors.Is(res.Err, fsm.ErrTokenNotFound) {
		return fmt.Errorf("%w: %q in channel %q", ErrTokenNotFound, id, channel)
	}
	if res.Err == nil {
		n.log.Info("channel token revoked", "channel", channel, "token", id)
	}
	return res.Err
}

// SetChannelSettings replaces channel's public prefixes and CORS (the
// server validated them).
func (n *Node) SetChannelSettings(ctx context.Context, channel string, s api.ChannelSettings) error {
	return n.route.do(ctx, "settings", func(ctx context.Context) error {
		return n.setSettingsHere(ctx, channel, s)
	}, func(ctx context.Context, re *shard.RedirectError) error {
		return n.seeMetaWrite(ctx, n.route.setSettings(ctx, re, channel, s))
	})
}

func (n *Node) setSettingsHere(ctx context.Context, channel string, s api.ChannelSettings) error {
	if n.meta.raft.State() != raft.Leader {
		return n.metaRedirect()
	}
	res, err := n.proposeMeta(ctx, &fsm.SetChannelSettings{Channel: channel, Settings: FSMSettings(s)})
	if err != nil {
		return err
	}
	if errors.Is(res.Err, fsm.ErrChannelNotFound) {
		return fmt.Errorf("%w: %q", ErrChannelNotFound, channel)
	}
	return res.Err
}

// Token returns a token's record from this node's copy of the meta state.
func (n *Node) Token(id string) (fsm.TokenRecord, bool) { return n.meta.fsm.Token(id) }

// ChannelSettings returns channel's settings from this node's copy of the
// meta state (nil: none, or no such channel here).
func (n *Node) ChannelSettings(channel string) *fsm.ChannelSettings {
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		return nil
	}
	return ch.Settings
}

// FSMSettings converts the API's channel settings to the meta state's.
func FSMSettings(s api.ChannelSettings) fsm.ChannelSettings {
	out := fsm.ChannelSettings{PublicPrefixes: s.PublicPrefixes}
	if s.CORS != nil {
		c := fsm.CORS(*s.CORS)
		out.CORS = &c
	}
	return out
}

// APISettings converts the meta state's channel settings to the API's.
func APISettings(s *fsm.ChannelSettings) *api.ChannelSettings {
	if s == nil {
		return nil
	}
	out := &api.ChannelSettings{PublicPrefixes: s.PublicPrefixes}
	if s.CORS != nil {
		c := api.CORS(*s.CORS)
		out.CORS = &c
	}
	return out
}
