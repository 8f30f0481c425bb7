package server

import (
	"crypto/sha256"
	"net/http"
	"strings"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// idemScopeBytes is the length of the scope a keyed write carries.
const idemScopeBytes = 16

// headerHopIdemKey carries a forwarded request's Idempotency-Key to the
// node it is forwarded to (hideIdemKey).
const headerHopIdemKey = "X-Shardnet-Hop-Idempotency-Key"

// hideIdemKey moves the Idempotency-Key of a request about to be forwarded
// into headerHopIdemKey, which keyed reads as well. net/http's transport
// takes a request with Idempotency-Key for replayable and sends it again
// when a reused connection breaks after it was sent; a node resends a
// write only when nothing was sent (docs/design.md "D3"), so the forward
// must not look replayable. Only the client retries, under its key.
func hideIdemKey(r *http.Request) {
	if vals := r.Header.Values(api.HeaderIdempotencyKey); len(vals) > 0 {
		r.Header.Del(api.HeaderIdempotencyKey)
		r.Header[headerHopIdemKey] = append(r.Header[headerHopIdemKey], vals...)
	}
}

// keyed wraps a write in an fsm.Idempotent when the request carries an
// Idempotency-Key (docs/design.md "D15"), so that the channel's state
// machine answers a retry with the first attempt's outcome. The request
// hash covers the channel and the encoded write: the parts of the method,
// path, query and body that decide its effect, in one canonical form.
func keyed(req *request, cmd fsm.Command) (fsm.Command, error) {
	vals := req.r.Header.Values(api.HeaderIdempotencyKey)
	vals = append(vals, req.r.Header.Values(headerHopIdemKey)...)
	switch len(vals) {
	case 0:
		return cmd, nil
	case 1:
	default:
		return nil, invalid("the %s header is given %d times; send it once", api.HeaderIdempotencyKey, len(vals))
	}
	key := []byte(vals[0])
	if err := fsm.ValidateIdemKey(key); err != nil {
		return nil, invalid("the %s header must be 1 to %d bytes of visible ASCII (0x21-0x7E): %v",
			api.HeaderIdempotencyKey, fsm.MaxIdemKeyBytes, err)
	}
	b, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(req.ch))
	h.Write([]byte{0})
	h.Write(b)
	p := &fsm.Idempotent{Scope: idemScope(req.r), Key: key, Window: fsm.DefaultIdemWindow, Cmd: cmd}
	h.Sum(p.Hash[:0])
	return p, nil
}

// idemScope is whose keys a request's key is among: a hash of the bearer
// token presented (of nothing without one), so that clients with other
// tokens never see each other's keys. When channels have tokens of their
// own, the token's id takes its place. A node forwards Authorization, so
// the leader computes the same scope as the node the client reached.
func idemScope(r *http.Request) []byte {
	tok := strings.TrimSpace(r.Header.Get("Authorization"))
	const scheme = "bearer "
	if len(tok) >= len(scheme) && strings.EqualFold(tok[:len(scheme)], scheme) {
		tok = strings.TrimSpace(tok[len(scheme):])
	}
	sum := sha256.Sum256([]byte("shardnet idempotency scope\x00" + tok))
	return sum[:idemScopeBytes]
}
