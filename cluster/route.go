package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/shardnet/shardnet/shard"
)

// The one request path between nodes. A request this node cannot answer
// (its channel is hosted elsewhere, its leader is another node, it is a
// meta write and another node leads the meta group) is served by calling
// the node that can, once, with one binary call on a stream of its own
// (transport.DialCall, authenticated like Raft itself: a certificate of the
// cluster CA, or the cluster key under -insecure).
// The node serving a call checks who may make it (routeauth.go, in
// serveRoute before any handler): the client the call carries, and the
// calling node by its certificate.
// The decision lives in router.do and nowhere else: run the local answer;
// when it is a *shard.RedirectError, call the node it names. The node
// serving a call answers from its own state or fails (servedCall): it
// never calls on, so a request crosses at most one hop.
//
// A call has a stream to itself while it runs (idle streams are pooled per
// peer, router.stream; one that carried a body is closed after it). Both
// directions big-endian:
//
//	request head:  op u8 | length u32 | guard u64 (all ones) | timeout ms u32 |
//	               flags u8 (bit 0: a request body follows) |
//	               proof (the client's credential: routeauth.go appendProof) |
//	               the op's head
//	request body:  chunks (optional)
//	answer head:   status u8 (answerOK, answerErr) | length u32 |
//	               for answerOK: flags u8 (bit 0: an answer body follows) |
//	               the op's answer; for answerErr: an error (encodeCallError)
//	answer body:   chunks (optional)
//	chunks:        length u32 | bytes, repeated; length 0 ends the body,
//	               length chunkAbort ends it failed, followed by length u32 |
//	               an error (encodeCallError)
//
// The timeout is the caller's deadline: the serving node drops the call
// when it passes, and when the caller goes away (it closes the stream:
// watchCaller), so a stalled request holds nothing on the far node. Bodies
// move under the transport's per-stream flow control, so a snapshot (or,
// later, a file) streams without being held in memory at either end.
//
// Compatibility (remove with the version after the one that introduced
// route calls): the op bytes of route calls are above every op of the
// older framing on the same streams (calls.go), and the guard reads as a
// group id no node hosts, so a node of the previous version refuses a
// route call unread, with a status of the old framing (0 or 1); the caller
// then knows nothing was done there (errPreviousVersion) and falls back to
// what that version serves: its calls (propose, read indexes, hashes), its
// /internal/ HTTP endpoints (replica info, snapshots) or, for whole API
// requests, a *PreviousVersionError that the HTTP server forwards as that
// version expects.

// Ops of route calls. Each one's head and answer are described at its
// client half (routeops.go).
const (
	rcPropose       byte = 0x10
	rcReadIndex     byte = 0x11
	rcMetaReadIndex byte = 0x12
	rcHash          byte = 0x13
	rcGet           byte = 0x14
	rcList          byte = 0x15
	rcWatch         byte = 0x16
	rcReplicaInfo   byte = 0x17
	rcCreateChannel byte = 0x18
	rcDeleteChannel byte = 0x19
	rcRepair        byte = 0x1A
	rcSnapshot      byte = 0x1B
	rcIssueToken    byte = 0x1C
	rcRevokeToken   byte = 0x1D
	rcSettings      byte = 0x1E
	// Backup and restore (backup.go).
	rcBackup         byte = 0x32
	rcRestoreFetch   byte = 0x33
	rcCreateRestored byte = 0x34
	// Quorum-loss recovery (recover.go).
	rcRecoverInfo   byte = 0x35
	rcRetire        byte = 0x36
	rcRecoverMeta   byte = 0x37
	rcMember        byte = 0x24 // membership.go
	rcMetaWatch     byte = 0x20 // metawatch.go
	rcChangeChannel byte = 0x25 // scale.go
	rcDrain         byte = 0x2E
	rcLeave         byte = 0x2F
	rcRemoveNode    byte = 0x30
	// Files (files.go).
	rcPutChunk  byte = 0x38
	rcGetChunk  byte = 0x39
	rcStatFile  byte = 0x3A
	rcListFiles byte = 0x3B
	// rcHoldCollection: a backup holds chunk collection (backupholds.go).
	rcHoldCollection byte = 0x3C
	// rcLeaseChunks: a resumable upload's holders lease its chunks again
	// (uploadholders.go).
	rcLeaseChunks byte = 0x3D

	answerOK  byte = 0x10
	answerErr byte = 0x11

	flagBody byte = 1

	routeGuard = ^uint64(0)
	routeHead  = 8 + 4 + 1
	// chunkAbort ends a body that failed midway.
	chunkAbort = ^uint32(0)
	// maxChunk bounds one chunk a writer sends; a reader takes up to
	// maxCallBody, the bound of every frame.
	maxChunk = 256 << 10
	// maxCallTimeout bounds the timeout a caller may ask for (a repair's
	// snapshot, a blocking read's wait); most calls ask far less.
	maxCallTimeout = 15 * time.Minute
)

// callGrace is how much longer than a call's deadline its caller waits for
// the answer that the deadline passed.
const callGrace = time.Second

// shortCall marks the ops that take at most internalCallLimit, whatever
// the caller's deadline: the hot path's small calls.
var shortCall = map[byte]bool{rcPropose: true, rcReadIndex: true, rcMetaReadIndex: true, rcHash: true, rcReplicaInfo: true, rcMember: true}

// routeRetryFor bounds how long a request whose call reached nobody is
// routed again (nothing was sent: the backend names the node as it knows
// it then: a leader that was killed is replaced by the one its replicas
// elected); routeRetryPause spaces the attempts: a dead node's dial fails
// at once, and its replicas need a moment to elect and learn the new
// leader.
const (
	routeRetryFor   = 3 * time.Second
	routeRetryPause = 50 * time.Millisecond
)

// ErrUnreachable says the node that can answer a request could not be
// reached, and nothing was sent to it.
var ErrUnreachable = errors.New("cluster: cannot reach the node that can answer")

// errPreviousVersion: the peer runs the previous version, which refused a
// route call unread.
var errPreviousVersion = errors.New("cluster: the peer runs a version without route calls")

// PreviousVersionError says a request must be served by a node of the
// previous version, which takes no route calls: the HTTP server forwards
// the request there as that version expects (server/forward.go). It
// unwraps to the redirect naming the node. Remove with the compatibility
// note above.
type PreviousVersionError struct{ Redirect *shard.RedirectError }

func (e *PreviousVersionError) Error() string {
	return fmt.Sprintf("node %s runs the previous version: %v", e.Redirect.NodeID, e.Redirect)
}
func (e *PreviousVersionError) Unwrap() error { return e.Redirect }

// router is the request-routing half of a node: where a request is
// served, the calls that carry it to another node and the serving of the
// calls other nodes send.
type router struct {
	n    *Node
	dial func(ctx context.Context, addr string) (net.Conn, error)

	// leaders caches, for channels not hosted here, who leads them.
	leaders *leaderCache
	// watches holds a token per watch call served (maxServedWatches).
	watches chan struct{}

	// legacy and legacyHTTP speak to nodes of the previous version (the
	// compatibility note above).
	legacy     *calls
	legacyHTTP *http.Client

	// ctx ends when the node stops serving calls: calls served end with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	idle   map[string][]*callConn // idle call streams by peer address
	served map[net.Conn]struct{}  // call streams being served
	closed bool
}

func newRouter(n *Node, dial, dialApp func(ctx context.Context, addr string) (net.Conn, error)) *router {
	ctx, cancel := context.WithCancel(context.Background())
	return &router{
		n:       n,
		ctx:     ctx,
		cancel:  cancel,
		dial:    dial,
		leaders: newLeaderCache(),
		watches: make(chan struct{}, maxServedWatches),
		legacy:  newCalls(dial),
		legacyHTTP: &http.Client{Transport: &http.Transport{
			DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return dialApp(ctx, addr) },
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     30 * time.Second,
		}},
		idle:   map[string][]*callConn{},
		served: map[net.Conn]struct{}{},
	}
}

type servedKey struct{}

// servedCall reports whether ctx is a call's (or a request forwarded by a
// node of the previous version): it must be answered here or fail.
func servedCall(ctx context.Context) bool { return ctx.Value(servedKey{}) != nil }

// ServedLocally reports whether ctx was marked by ServeLocally.
func ServedLocally(ctx context.Context) bool { return servedCall(ctx) }

// ServeLocally marks ctx as a request another node sent here: nothing done
// under it calls on to a third node (a forwarded request is not forwarded
// again). The HTTP server marks the requests nodes of the previous version
// forward to it.
func ServeLocally(ctx context.Context) context.Context {
	return context.WithValue(ctx, servedKey{}, true)
}

// do is the routing decision, for every request that may be served
// elsewhere: local answers here; when it answers a *shard.RedirectError
// (and ctx is not a served call), remote calls the node it names. A request
// is sent to a node at most once, and sent again elsewhere only when the
// first send proved nothing was done: the call reached nobody (a dial
// failure), or the node refused it before doing anything (it no longer
// leads, does not host the group, is stopping). Then the decision runs
// again, for up to routeRetryFor, once local names another node (or at
// once, on the node the refusal names). Anything else remote answers is
// the answer: a request that may have been served is never sent again.
func (r *router) do(ctx context.Context, call string, local func(context.Context) error, remote func(context.Context, *shard.RedirectError) error) error {
	err := local(ctx)
	if servedCall(ctx) {
		return err
	}
	var retryUntil time.Time
	failed := map[string]bool{} // the nodes that failed or refused
	var next, lastTo *shard.RedirectError
	var last error // what the last of them answered
	for {
		re := next
		next = nil
		if re == nil && (!errors.As(err, &re) || re.Addr == "" || re.NodeID == r.n.cfg.Name) {
			return err
		}
		if !failed[re.Addr] {
			if len(failed) > 0 {
				r.n.metrics.calls.WithLabelValues(call, "rerouted").Inc()
			}
			err = remote(ctx, re)
			if !nothingDone(err) {
				return err
			}
			failed[re.Addr], last, lastTo = true, err, re
			var moved *shard.RedirectError
			if errors.As(err, &moved) && moved.Addr != "" && !failed[moved.Addr] && moved.NodeID != r.n.cfg.Name {
				next = moved // the refusing node names who can answer
			}
		}
		if retryUntil.IsZero() {
			retryUntil = time.Now().Add(routeRetryFor)
		}
		if time.Now().After(retryUntil) {
			return unreachable(last, lastTo)
		}
		if next != nil {
			continue
		}
		select {
		case <-ctx.Done():
			return unreachable(last, lastTo)
		case <-r.n.stop:
			return unreachable(last, lastTo)
		case <-time.After(routeRetryPause):
		}
		if err = local(ctx); err == nil {
			return nil
		}
	}
}

// nothingDone reports whether err, a call's, proves the request was not
// served: the call reached nobody, or the node refused it first.
func nothingDone(err error) bool {
	var cf *callFailedError
	var pv *PreviousVersionError
	switch {
	case err == nil, errors.Is(err, shard.ErrOutcomeUnknown), errors.As(err, &pv):
		return false
	case errors.As(err, &cf):
		return !cf.sent
	}
	for _, refusal := range []error{shard.ErrNotLeader, shard.ErrNotHosted, shard.ErrNoLeader, shard.ErrStopped, ErrNotMetaLeader, ErrNoMetaLeader} {
		if errors.Is(err, refusal) {
			return true
		}
	}
	return false
}

// unreachable is the answer once re-routing gave up: a call that reached
// nobody says so; a refusal is passed on.
func unreachable(err error, re *shard.RedirectError) error {
	var cf *callFailedError
	if errors.As(err, &cf) && !cf.sent {
		return fmt.Errorf("%w: node %s: %v", ErrUnreachable, re.NodeID, err)
	}
	return err
}
