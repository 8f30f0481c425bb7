package server

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Everything a request carries is checked here, before anything reaches
// the backend, so that a client gets a precise 4xx and nothing is proposed.

var channelNameRE = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

// validChannel checks a channel name (as it appears in a path: a valid name
// needs no escaping, so the escaped form is checked as it is).
func validChannel(name string) error {
	if !channelNameRE.MatchString(name) {
		return refuse(errInvalidChannel, "channel name %q must be 1 to 63 of a-z, 0-9 and '-'", name)
	}
	return nil
}

// parseKey unescapes the key part of a path and validates it.
func parseKey(raw string) ([]byte, error) {
	k, err := api.UnescapeKey(raw)
	if err != nil {
		return nil, refuse(fsm.ErrInvalidKey, "key %q is not a valid escaped path: %v", raw, err)
	}
	key := []byte(k)
	if err := validateKey(key, "key"); err != nil {
		return nil, err
	}
	return key, nil
}

// validateKey applies fsm.ValidateKey with a message that says why; what
// names the key in the message.
func validateKey(key []byte, what string) error {
	if len(key) == 0 {
		return refuse(fsm.ErrInvalidKey, "%s is empty", what)
	}
	if err := checkKeyText(key, what); err != nil {
		return err
	}
	// The fsm has the last word; the checks above only explain.
	if err := fsm.ValidateKey(key); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// checkKeyText checks what keys, prefixes and cursors share: at most
// fsm.MaxKeyBytes of UTF-8 without NUL (empty is allowed).
func checkKeyText(b []byte, what string) error {
	if len(b) > fsm.MaxKeyBytes {
		return refuse(fsm.ErrKeyTooLarge, "%s is %d bytes, over the limit of %d", what, len(b), fsm.MaxKeyBytes)
	}
	if !utf8.Valid(b) {
		return refuse(fsm.ErrInvalidKey, "%s is not valid UTF-8", what)
	}
	for i, c := range b {
		if c == 0 {
			return refuse(fsm.ErrInvalidKey, "%s contains a NUL byte at offset %d", what, i)
		}
	}
	return nil
}

// parseConsistency reads ?consistency= (default linearizable).
func parseConsistency(q url.Values) (shard.ReadLevel, error) {
	switch c := api.Consistency(q.Get("consistency")); c {
	case "", api.Linearizable:
		return shard.Linearizable, nil
	case api.Lease:
		return shard.Lease, nil
	case api.Stale:
		return shard.Stale, nil
	default:
		return 0, invalid("consistency %q must be linearizable, lease or stale", string(c))
	}
}

// parseCAS reads ?cas=N.
func parseCAS(q url.Values) (has bool, cas uint64, err error) {
	if !q.Has("cas") {
		return false, 0, nil
	}
	s := q.Get("cas")
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return false, 0, invalid("cas %q must be an unsigned integer (a modify index; 0: create only)", s)
	}
	return true, n, nil
}

// parseLimit reads ?limit= (default DefaultListLimit).
func parseLimit(q url.Values) (int, error) {
	if !q.Has("limit") {
		return DefaultListLimit, nil
	}
	s := q.Get("limit")
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxListLimit {
		return 0, invalid("limit %q must be an integer from 1 to %d", s, MaxListLimit)
	}
	return n, nil
}

// watch is a blocking read's parameters.
type watch struct {
	blocking bool
	index    uint64
	wait     time.Duration // capped and jittered
}

// parseWatch reads ?index=N&wait=D. wait needs index; without wait, the
// read waits MaxWait.
func parseWatch(q url.Values) (watch, error) {
	if !q.Has("index") {
		if q.Has("wait") {
			return watch{}, invalid("wait needs index: a blocking read is ?index=N&wait=D")
		}
		return watch{}, nil
	}
	s := q.Get("index")
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return watch{}, invalid("index %q must be an unsigned integer", s)
	}
	w := watch{blocking: true, index: n, wait: MaxWait}
	if q.Has("wait") {
		ws := q.Get("wait")
		d, err := time.ParseDuration(ws)
		if err != nil || d <= 0 {
			return watch{}, invalid("wait %q must be a positive duration such as 30s or 5m", ws)
		}
		w.wait = min(d, MaxWait)
	}
	w.wait = jitter(w.wait)
	return w, nil
}

// jitter spreads d by up to ±1/16.
func jitter(d time.Duration) time.Duration {
	span := int64(d / 16)
	if span <= 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(2*span+1)-span)
}
