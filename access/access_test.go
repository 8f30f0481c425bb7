package access

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// The checks both the HTTP server and the node serving a route call make:
// who a bearer token is, what its scope allows, and the credential-less
// reads (signed links, public prefixes).
func TestChecks(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tokens := map[string]fsm.TokenRecord{}
	issue := func(id, channel, scope string, expires int64, revoked bool) string {
		tokens[id] = fsm.TokenRecord{ID: id, Channel: channel, Scope: scope, Hash: fsm.HashSecret("s" + id), ExpiresAt: expires, Revoked: revoked}
		return api.FormatToken(id, "s"+id)
	}
	rw := issue("0000000000000001", "x", fsm.ScopeReadWrite, 0, false)
	ro := issue("0000000000000002", "x", fsm.ScopeReadOnly, 0, false)
	revoked := issue("0000000000000003", "x", fsm.ScopeReadWrite, 0, true)
	expired := issue("0000000000000004", "x", fsm.ScopeReadWrite, now.UnixMilli()-1, false)
	c := NewChecker("op", func(id string) (fsm.TokenRecord, bool) { t, ok := tokens[id]; return t, ok },
		func(ch string) *fsm.ChannelSettings {
			if ch == "x" {
				return &fsm.ChannelSettings{PublicPrefixes: []string{"pub/"}}
			}
			return nil
		})
	if c.Open() || !NewChecker("", nil, nil).Open() {
		t.Fatal("a checker is open exactly when it has no operator token")
	}
	for _, tc := range []struct {
		name, token string
		rule        Rule
		channel     string
		want        error
	}{
		{"operator, management", "op", RuleOperator, "", nil},
		{"operator, any channel", "op", RuleWrite, "y", nil},
		{"read-write, write", rw, RuleWrite, "x", nil},
		{"read-write, other channel", rw, RuleRead, "y", ErrForbidden},
		{"read-write, management", rw, RuleOperator, "x", ErrForbidden},
		{"read-only, read", ro, RuleRead, "x", nil},
		{"read-only, write", ro, RuleWrite, "x", ErrForbidden},
		{"revoked", revoked, RuleRead, "x", ErrUnauthorized},
		{"expired", expired, RuleRead, "x", ErrUnauthorized},
		{"wrong secret", api.FormatToken("0000000000000001", "nope"), RuleRead, "x", ErrUnauthorized},
		{"not a token", "op2", RuleRead, "x", ErrUnauthorized},
	} {
		cred, err := c.Bearer(tc.token, now)
		if err == nil {
			err = Allow(cred, tc.rule, tc.channel, "call")
		}
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	exp := strconv.FormatInt(now.Unix()+60, 10)
	e, _ := strconv.ParseInt(exp, 10, 64)
	sig := LinkSignature(tokens["0000000000000002"].Hash, "x", KVResource([]byte("k")), e)
	link := Link{Token: "0000000000000002", Exp: exp, Sig: sig}
	switch {
	case !c.SignedLink(link, "x", KVResource([]byte("k")), now):
		t.Error("a signed link to its key is refused")
	case c.SignedLink(link, "x", KVResource([]byte("other")), now):
		t.Error("a signed link opens another key")
	case c.SignedLink(link, "x", KVResource([]byte("k")), now.Add(2*time.Minute)):
		t.Error("an expired signed link is accepted")
	case !c.Public("x", "pub/a") || c.Public("x", "priv/a") || c.Public("y", "pub/a"):
		t.Error("public prefixes: wrong answer")
	}
}

// Operator tokens rotate without a restart: old and new both accepted
// while the file lists both, then only the new one; a reload never opens
// a closed API nor closes an open one.
func TestOperatorTokenRotation(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := NewChecker("old", nil, nil)
	isOperator := func(tok string) bool {
		cred, err := c.Bearer(tok, now)
		return err == nil && cred.Operator
	}
	if !isOperator("old") || isOperator("new") {
		t.Fatal("before the rotation only the old token is the operator's")
	}
	if err := c.SetOperatorTokens("old\n\n  new  \n"); err != nil {
		t.Fatal(err)
	}
	if !isOperator("old") || !isOperator("new") || c.OperatorTokens() != 2 {
		t.Fatalf("during the rotation both tokens are the operator's (%d accepted)", c.OperatorTokens())
	}
	if err := c.SetOperatorTokens("new\n"); err != nil {
		t.Fatal(err)
	}
	if isOperator("old") || !isOperator("new") {
		t.Fatal("after the rotation only the new token is the operator's")
	}
	if err := c.SetOperatorTokens(" \n"); !errors.Is(err, ErrAuthModeChange) || c.Open() || !isOperator("new") {
		t.Fatalf("an empty reload must be refused and change nothing: %v", err)
	}
	open := NewChecker("", nil, nil)
	if err := open.SetOperatorTokens("x"); !errors.Is(err, ErrAuthModeChange) || !open.Open() {
		t.Fatalf("a reload must not close an open API: %v", err)
	}
	var zero Checker
	if !zero.Open() {
		t.Fatal("a zero checker is open")
	}
}
