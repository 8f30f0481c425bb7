package transport

import (
	"sync"

	"github.com/hashicorp/yamux"
)

// streamSet holds the streams accepted on one inbound session that may be
// blocked in Read (an idle pooled RPC stream waits there without a
// deadline) or Write.
//
// yamux v0.1.2's Stream.Read and Stream.Write busy-loop once their session
// has shut down, until Session.Close reaches the stream and marks it closed
// (hashicorp/yamux pull request 176, not released): the wait's select finds
// the session's closed shutdown channel ready, goes back to the top, sees
// the stream still open and no data, and waits again. With a few thousand
// idle streams on a session (a node hosting 1,000 channels) the spinning
// readers starved Session.Close, which takes each stream's lock in turn,
// and a graceful restart in TestIdleCost hung for minutes at full CPU. A
// deadline in the past ends a blocked Read or Write at once, so every
// stream of the set gets one as soon as the session ends, and before this
// node closes the session itself.
type streamSet struct {
	mu     sync.Mutex
	m      map[*yamux.Stream]struct{}
	closed bool
}

func newStreamSet() *streamSet { return &streamSet{m: map[*yamux.Stream]struct{}{}} }

// add records st, or returns false once the set's session has ended.
func (s *streamSet) add(st *yamux.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.m[st] = struct{}{}
	return true
}

func (s *streamSet) remove(st *yamux.Stream) {
	s.mu.Lock()
	delete(s.m, st)
	s.mu.Unlock()
}

// abortAll gives every stream a deadline in the past; later adds fail.
func (s *streamSet) abortAll() {
	s.mu.Lock()
	s.closed = true
	streams := s.m
	s.m = map[*yamux.Stream]struct{}{}
	s.mu.Unlock()
	for st := range streams {
		expire(st)
	}
}
