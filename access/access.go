package access

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// Refusals: the server answers them 401 and 403, and a route call carries
// them back to the node the client reached (cluster/calls.go).
var (
	ErrUnauthorized = errors.New("access: unauthorized")
	ErrForbidden    = errors.New("access: forbidden")
)

// Refusal is a refusal with a message meant for the client as it is; it
// matches its sentinel (ErrUnauthorized, ErrForbidden) with errors.Is.
type Refusal struct {
	Sentinel error
	Msg      string
}

func (e *Refusal) Error() string { return e.Msg }
func (e *Refusal) Unwrap() error { return e.Sentinel }

func refuse(sentinel error, format string, args ...any) error {
	return &Refusal{sentinel, fmt.Sprintf(format, args...)}
}

// Rule says who may call an endpoint (docs/api.md "Authentication").
type Rule int

const (
	RuleUnset    Rule = iota
	RulePublic        // anyone: GET /v1/health
	RuleOperator      // the operator token: cluster management
	RuleRead          // the operator token or any token of the channel (and, on key reads, public prefixes and signed links)
	RuleWrite         // the operator token or a read-write token of the channel
)

// Credential is what a bearer token turned out to be.
type Credential struct {
	Operator bool
	Token    fsm.TokenRecord // a channel token, when !Operator
}

// Checker checks credentials against the operator tokens and a node's
// copy of the meta state. With no operator token (and as a zero value)
// the API is open: Open reports it, and callers check nothing then.
type Checker struct {
	// operators holds the hashes of the operator tokens; swapped whole by
	// SetOperatorTokens, so a request sees the old set or the new one.
	operators atomic.Pointer[[][sha256.Size]byte]
	// token and settings read the node's copy of the meta state.
	token    func(id string) (fsm.TokenRecord, bool)
	settings func(channel string) *fsm.ChannelSettings
}

// NewChecker makes a checker for the operator tokens (one per line; ""
// leaves the API open) that looks tokens and channel settings up with the
// given funcs.
func NewChecker(operatorTokens string, token func(id string) (fsm.TokenRecord, bool), settings func(channel string) *fsm.ChannelSettings) *Checker {
	c := &Checker{token: token, settings: settings}
	hashes := operatorHashes(operatorTokens)
	c.operators.Store(&hashes)
	return c
}

// ErrAuthModeChange refuses a reload that would open a closed API or close
// an open one: both are restarts, decided with the node's other flags.
var ErrAuthModeChange = errors.New("access: a reload cannot turn authentication on or off; restart the node")

// SetOperatorTokens replaces the operator tokens (one per line) while the
// node runs: during a rotation the file lists the old token and the new
// one, both accepted, until every client has the new one.
func (c *Checker) SetOperatorTokens(tokens string) error {
	hashes := operatorHashes(tokens)
	if (len(hashes) == 0) != c.Open() {
		return ErrAuthModeChange
	}
	c.operators.Store(&hashes)
	return nil
}

// OperatorTokens is how many operator tokens are accepted.
func (c *Checker) OperatorTokens() int { return len(c.ops()) }

// ops is the operator tokens' hashes; none for a zero Checker (open).
func (c *Checker) ops() [][sha256.Size]byte {
	if p := c.operators.Load(); p != nil {
		return *p
	}
	return nil
}

func operatorHashes(tokens string) [][sha256.Size]byte {
	var out [][sha256.Size]byte
	for _, line := range strings.Split(tokens, "\n") {
		if t := strings.TrimSpace(line); t != "" {
			out = append(out, sha256.Sum256([]byte(t)))
		}
	}
	return out
}

// Open reports whether the API is open: no operator token, nothing
// checked.
func (c *Checker) Open() bool { return len(c.ops()) == 0 }

// Bearer checks a bearer token: an operator token, or a channel token
// that exists, is not revoked and not expired (an ErrUnauthorized refusal
// otherwise). A channel token is checked against this node's copy of the
// meta state: no Raft round-trip.
func (c *Checker) Bearer(tok string, now time.Time) (Credential, error) {
	// Hashes of equal length: not even the length leaks; every operator
	// token is compared, so neither does which one matched.
	got := sha256.Sum256([]byte(tok))
	match := 0
	for _, h := range c.ops() {
		match |= subtle.ConstantTimeCompare(got[:], h[:])
	}
	if match == 1 {
		return Credential{Operator: true}, nil
	}
	id, secret, ok := api.ParseToken(tok)
	if !ok {
		return Credential{}, refuse(ErrUnauthorized, "missing or wrong bearer token")
	}
	t, err := c.LiveToken(id, now)
	if err != nil {
		return Credential{}, err
	}
	if subtle.ConstantTimeCompare(fsm.HashSecret(secret), t.Hash) != 1 {
		return Credential{}, refuse(ErrUnauthorized, "missing or wrong bearer token")
	}
	return Credential{Token: t}, nil
}

// LiveToken returns a token that exists, is not revoked and not expired.
func (c *Checker) LiveToken(id string, now time.Time) (fsm.TokenRecord, error) {
	t, ok := c.token(id)
	switch {
	case !ok:
		return t, refuse(ErrUnauthorized, "missing or wrong bearer token")
	case t.Revoked:
		return t, refuse(ErrUnauthorized, "token %s was revoked", id)
	case t.Expired(now.UnixMilli()):
		return t, refuse(ErrUnauthorized, "token %s expired at %s", id, time.UnixMilli(t.ExpiresAt).UTC().Format(time.RFC3339))
	}
	return t, nil
}

// Allow says whether cred may call, with method (for the message), an
// endpoint of rule on channel ch ("" for none): nil, or an ErrForbidden
// refusal.
func Allow(cred Credential, rule Rule, ch, method string) error {
	t := cred.Token
	switch {
	case cred.Operator, rule == RulePublic:
		return nil
	case rule != RuleRead && rule != RuleWrite:
		return refuse(ErrForbidden, "a channel token cannot call %s on this path: it needs the operator token", method)
	case ch != t.Channel:
		return refuse(ErrForbidden, "token %s belongs to channel %s, not %q", t.ID, t.Channel, ch)
	case rule == RuleWrite && t.Scope != fsm.ScopeReadWrite:
		return refuse(ErrForbidden, "token %s is %s: %s here needs a read-write token", t.ID, t.Scope, method)
	}
	return nil
}

// Public says whether key (or a listing prefix) lies under one of the
// channel's public prefixes, as this node's meta copy has them.
func (c *Checker) Public(ch, key string) bool {
	st := c.settings(ch)
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
// channel — today "kv/<key>", the decoded key (KVResource); a file path
// will be "files/<path>" the same way — and is signed with a key derived
// from the signing token's stored hash, so revoking (or the expiry of) that
// token ends every link it signed, and the secret itself is never needed.

// KVResource is the resource a signed link to key names.
func KVResource(key []byte) string { return "kv/" + string(key) }

// FileResource is the resource a signed link to a channel's file names.
func FileResource(path string) string { return "files/" + path }

// LinkSignature is the signature of a link to resource of channel until
// exp (Unix seconds), by the token whose stored hash is hash. The resource
// comes last, so a key holding newlines cannot shift the other fields.
func LinkSignature(hash []byte, channel, resource string, exp int64) string {
	kdf := hmac.New(sha256.New, hash)
	kdf.Write([]byte("shardnet signed link v1"))
	mac := hmac.New(sha256.New, kdf.Sum(nil))
	mac.Write([]byte("v1\n" + strconv.FormatInt(exp, 10) + "\n" + channel + "\n" + resource))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// SignedLink checks a link's token id, expiry and signature for resource
// of channel ch.
func (c *Checker) SignedLink(l Link, ch, resource string, now time.Time) bool {
	e, err := strconv.ParseInt(l.Exp, 10, 64)
	if err != nil || l.Token == "" || l.Sig == "" || now.Unix() >= e {
		return false
	}
	t, err := c.LiveToken(l.Token, now)
	if err != nil || t.Channel != ch {
		return false
	}
	want := LinkSignature(t.Hash, ch, resource, e)
	return hmac.Equal([]byte(want), []byte(l.Sig))
}

// Link is a signed link's query: the signing token's id, the expiry (Unix
// seconds, as sent) and the signature.
type Link struct {
	Token, Exp, Sig string
}

// Proof is a client's credential as the node it connected to received it,
// carried with a route call so that the serving node checks it again
// (cluster/routeauth.go). The zero Proof (ProofNone) says the call is the
// node's own, for itself, not a client's.
type Proof struct {
	Kind   ProofKind
	Bearer string // ProofBearer: the token as the client sent it
	Link   Link   // ProofLink
}

// ProofKind says what a Proof holds.
type ProofKind byte

const (
	ProofNone      ProofKind = iota // no client: the node's own call
	ProofAnonymous                  // a client without a credential (public prefixes; an open API)
	ProofBearer                     // a bearer token, operator or channel
	ProofLink                       // a signed link's query
)

type proofKey struct{}

// WithProof marks ctx as a client's request, made with p.
func WithProof(ctx context.Context, p Proof) context.Context {
	return context.WithValue(ctx, proofKey{}, p)
}

// ProofOf returns the client proof ctx carries: ProofNone for the node's
// own work.
func ProofOf(ctx context.Context) Proof {
	p, _ := ctx.Value(proofKey{}).(Proof)
	return p
}
