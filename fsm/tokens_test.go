package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// tokenLog is the sequence of meta commands the token tests apply: a
// channel, tokens issued, revoked, refused, settings, and the channel
// deleted and created again.
func tokenLog() []MetaCommand {
	tok := func(id string, group uint64, created, expires int64) *IssueToken {
		return &IssueToken{Token: TokenRecord{ID: id, Channel: "nft", GroupID: group, Scope: ScopeReadOnly,
			Hash: HashSecret("secret-" + id), CreatedAt: created, ExpiresAt: expires}}
	}
	return []MetaCommand{
		&CreateChannel{Channel: ChannelRecord{Name: "nft", Replicas: 1}},
		tok("a", 1, 1000, 0),
		tok("b", 1, 1001, 5000),
		&RevokeToken{Channel: "nft", ID: "a"},
		tok("c", 7, 1002, 0), // a group id the channel does not have
		&SetChannelSettings{Channel: "nft", Settings: ChannelSettings{
			PublicPrefixes: []string{"pub/"},
			CORS:           &CORS{AllowedOrigins: []string{"https://x.example"}, MaxAge: 60},
		}},
		&CreateChannel{Channel: ChannelRecord{Name: "other", Replicas: 1}},
		tok("d", 1, 1003, 0),
	}
}

func applyAll(t *testing.T, m *Meta, cmds []MetaCommand) []*MetaResult {
	t.Helper()
	var out []*MetaResult
	for i, c := range cmds {
		out = append(out, m.Apply(metaLog(t, uint64(i+1), c)).(*MetaResult))
	}
	return out
}

func TestTokenCommands(t *testing.T) {
	m := NewMeta()
	res := applyAll(t, m, tokenLog())
	for i, want := range []error{nil, nil, nil, nil, ErrChannelChanged, nil, nil, nil} {
		if !errors.Is(res[i].Err, want) || (want == nil && res[i].Err != nil) {
			t.Errorf("command %d (%T): err %v, want %v", i+1, tokenLog()[i], res[i].Err, want)
		}
	}
	a, ok := m.Token("a")
	if !ok || !a.Revoked || a.CreateIndex != 2 || a.ModifyIndex != 4 || !bytes.Equal(a.Hash, HashSecret("secret-a")) {
		t.Fatalf("token a = %+v, %v", a, ok)
	}
	if b, _ := m.Token("b"); b.Revoked || !b.Expired(5000) || b.Expired(4999) {
		t.Fatalf("token b = %+v", b)
	}
	if _, ok := m.Token("c"); ok {
		t.Fatal("a token of another incarnation of the channel was recorded")
	}
	if ts := m.Tokens("nft"); len(ts) != 3 || ts[0].ID != "a" || ts[1].ID != "b" || ts[2].ID != "d" {
		t.Fatalf("tokens of nft = %+v", ts)
	}
	if ch, _ := m.Channel("nft"); ch.Settings == nil || ch.Settings.PublicPrefixes[0] != "pub/" || ch.Settings.CORS.MaxAge != 60 {
		t.Fatalf("settings = %+v", ch.Settings)
	}
	// Copies, not the state itself.
	a.Hash[0] ^= 0xff
	if a2, _ := m.Token("a"); !bytes.Equal(a2.Hash, HashSecret("secret-a")) {
		t.Fatal("Token returned the state's own hash slice")
	}
	next := uint64(len(tokenLog()) + 1)
	apply := func(c MetaCommand) *MetaResult {
		r := m.Apply(metaLog(t, next, c)).(*MetaResult)
		next++
		return r
	}
	if r := apply(&IssueToken{Token: TokenRecord{ID: "a", Channel: "nft", GroupID: 1}}); !errors.Is(r.Err, ErrTokenExists) {
		t.Fatalf("duplicate id: %v", r.Err)
	}
	if r := apply(&RevokeToken{Channel: "other", ID: "b"}); !errors.Is(r.Err, ErrTokenNotFound) {
		t.Fatalf("revoke through another channel: %v", r.Err)
	}
	if r := apply(&SetChannelSettings{Channel: "nope"}); !errors.Is(r.Err, ErrChannelNotFound) {
		t.Fatalf("settings of a missing channel: %v", r.Err)
	}
	// Deleting the channel forgets its tokens; creating it again brings none back.
	apply(&DeleteChannel{Name: "nft"})
	apply(&CreateChannel{Channel: ChannelRecord{Name: "nft"}})
	for _, id := range []string{"a", "b", "d"} {
		if _, ok := m.Token(id); ok {
			t.Fatalf("token %s survived its channel", id)
		}
	}
	if ch, _ := m.Channel("nft"); ch.Settings != nil {
		t.Fatalf("settings survived the channel: %+v", ch.Settings)
	}
}

// Two replicas applying the same log hold byte-identical snapshots, and a
// snapshot restored elsewhere keeps every token and setting.
func TestTokensDeterministicAndRestored(t *testing.T) {
	a, b := NewMeta(), NewMeta()
	applyAll(t, a, tokenLog())
	applyAll(t, b, tokenLog())
	snap := func(m *Meta) []byte {
		s, err := m.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var sink bufSink
		if err := s.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		return sink.Bytes()
	}
	sa, sb := snap(a), snap(b)
	if !bytes.Equal(sa, sb) {
		t.Fatalf("two replicas of the same log differ:\n%s\n%s", sa, sb)
	}
	if !bytes.Contains(sa, []byte(`"tokens"`)) {
		t.Fatalf("the snapshot holds no tokens: %s", sa)
	}
	c := NewMeta()
	if err := c.Restore(nopCloser{bytes.NewReader(sa)}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap(c), sa) {
		t.Fatal("a restored replica snapshots differently")
	}
	if tok, ok := c.Token("a"); !ok || !tok.Revoked {
		t.Fatalf("restored token a = %+v, %v", tok, ok)
	}
	if ch, _ := c.Channel("nft"); ch.Settings == nil || ch.Settings.CORS == nil {
		t.Fatalf("restored settings = %+v", ch.Settings)
	}
}

// A channel holds at most MaxTokensPerChannel records: the next issue drops
// the revoked and expired ones (as of its own creation time, never a
// clock), and is refused when none can go.
func TestTokenCap(t *testing.T) {
	m := NewMeta()
	idx := uint64(1)
	apply := func(c MetaCommand) *MetaResult {
		r := m.Apply(metaLog(t, idx, c)).(*MetaResult)
		idx++
		return r
	}
	apply(&CreateChannel{Channel: ChannelRecord{Name: "nft"}})
	for i := range MaxTokensPerChannel {
		exp := int64(0)
		if i == 0 {
			exp = 2000
		}
		if r := apply(&IssueToken{Token: TokenRecord{ID: fmt.Sprint(i), Channel: "nft", GroupID: 1, CreatedAt: 1000, ExpiresAt: exp}}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	apply(&RevokeToken{Channel: "nft", ID: "1"})
	if r := apply(&IssueToken{Token: TokenRecord{ID: "x", Channel: "nft", GroupID: 1, CreatedAt: 1500}}); r.Err != nil {
		t.Fatalf("at the cap with a revoked token: %v", r.Err)
	}
	if _, ok := m.Token("1"); ok {
		t.Fatal("the revoked token was kept at the cap")
	}
	if _, ok := m.Token("0"); !ok {
		t.Fatal("a token not yet expired at the command's time was dropped")
	}
	if r := apply(&IssueToken{Token: TokenRecord{ID: "y", Channel: "nft", GroupID: 1, CreatedAt: 1600}}); !errors.Is(r.Err, ErrTooManyTokens) {
		t.Fatalf("at the cap with nothing to drop: %v", r.Err)
	}
	if r := apply(&IssueToken{Token: TokenRecord{ID: "z", Channel: "nft", GroupID: 1, CreatedAt: 2000}}); r.Err != nil {
		t.Fatalf("at the cap with an expired token: %v", r.Err)
	}
	if _, ok := m.Token("0"); ok {
		t.Fatal("the expired token was kept at the cap")
	}
}
