package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// testRouter is a router of a node named "a" with nothing but its metrics,
// for the routing decision and the call framing; dial reaches the peer a
// test serves.
func testRouter(t *testing.T, dial func(ctx context.Context, addr string) (net.Conn, error)) *router {
	t.Helper()
	n := &Node{cfg: Config{Name: "a"}, log: hclog.NewNullLogger(), metrics: newMetrics(prometheus.NewRegistry()), stop: make(chan struct{}),
		metaFSM: fsm.NewMeta(), check: access.NewChecker("", nil, nil)}
	r := newRouter(n, dial, dial)
	t.Cleanup(r.close)
	return r
}

func redirect(node string) *shard.RedirectError {
	return &shard.RedirectError{Err: shard.ErrNotLeader, NodeID: node, Addr: node + ":1"}
}

// The routing decision: each case's remote answers in turn, and the test
// counts the sends.
func TestRouteSendsARequestOnce(t *testing.T) {
	sentFail := &callFailedError{sent: true, err: errors.New("reset")}
	unsent := &callFailedError{err: errors.New("refused")}
	cases := []struct {
		name    string
		local   []error // local's answers in turn (the last one repeats)
		remote  []error // remote's answers in turn
		sends   int     // remote calls wanted
		to      []string
		wantErr error // nil: success
	}{
		{name: "served by the node named", local: []error{redirect("b")}, remote: []error{nil}, sends: 1, to: []string{"b"}},
		// Sent, no answer: the request may have been served; never again,
		// not even to the leader elected meanwhile.
		{name: "no answer after sending", local: []error{redirect("b"), redirect("c")}, remote: []error{sentFail, nil}, sends: 1, to: []string{"b"}, wantErr: sentFail},
		{name: "outcome unknown", local: []error{redirect("b"), redirect("c")}, remote: []error{shard.ErrOutcomeUnknown, nil}, sends: 1, to: []string{"b"}, wantErr: shard.ErrOutcomeUnknown},
		{name: "a business answer", local: []error{redirect("b")}, remote: []error{ErrChannelExists}, sends: 1, to: []string{"b"}, wantErr: ErrChannelExists},
		// Nothing sent: asked again where to go, sent to the new node.
		{name: "dial failure, then a new leader", local: []error{redirect("b"), redirect("c")}, remote: []error{unsent, nil}, sends: 2, to: []string{"b", "c"}},
		// A node that refuses first names the leader: sent there at once.
		{name: "refused, naming another", local: []error{redirect("b")}, remote: []error{redirect("c"), nil}, sends: 2, to: []string{"b", "c"}},
		// The node that failed is not sent the request again, even when
		// local still names it; after routeRetryFor, 503 unavailable.
		{name: "dial failure, no new leader", local: []error{redirect("b")}, remote: []error{unsent}, sends: 1, to: []string{"b"}, wantErr: ErrUnreachable},
		{name: "a previous version", local: []error{redirect("b")}, remote: []error{&PreviousVersionError{Redirect: redirect("b")}}, sends: 1, to: []string{"b"}, wantErr: shard.ErrNotLeader},
		{name: "redirect to itself", local: []error{redirect("a")}, sends: 0, wantErr: shard.ErrNotLeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := testRouter(t, nil)
			var to []string
			locals := 0
			err := r.do(t.Context(), "test", func(context.Context) error {
				locals++
				return tc.local[min(locals, len(tc.local))-1]
			}, func(_ context.Context, re *shard.RedirectError) error {
				to = append(to, re.NodeID)
				return tc.remote[len(to)-1]
			})
			if len(to) != tc.sends || strings.Join(to, ",") != strings.Join(tc.to, ",") {
				t.Fatalf("sent to %v, want %v", to, tc.to)
			}
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("answered %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// A node serving another's call answers from its own state or refuses:
// it never calls on.
func TestServedCallNeverCallsOn(t *testing.T) {
	r := testRouter(t, nil)
	called := false
	err := r.do(ServeLocally(t.Context()), "test", func(context.Context) error { return redirect("b") },
		func(context.Context, *shard.RedirectError) error { called = true; return nil })
	if called || !errors.Is(err, shard.ErrNotLeader) {
		t.Fatalf("served call: called on %v, answered %v; want the redirect as the answer", called, err)
	}
}

// pipeRouter serves route calls with h on the far end of a net.Pipe that
// the returned router's calls dial.
func pipeRouter(t *testing.T, h routeHandler) *router {
	t.Helper()
	server := testRouter(t, nil)
	return testRouter(t, func(ctx context.Context, addr string) (net.Conn, error) {
		c1, c2 := net.Pipe()
		go func() {
			defer c2.Close()
			br := bufio.NewReader(c2)
			op, frame, err := readFrame(br)
			if err != nil {
				return
			}
			server.serveRoute(c2, br, op, frame, h, "echo")
		}()
		return c1, nil
	})
}

// A call streams a body both ways: the request body reaches the handler
// in full, and the answer body comes back chunk by chunk, larger than
// any one frame.
func TestCallStreamsBodiesBothWays(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*maxChunk/16+5)
	r := pipeRouter(t, func(ctx context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
		got, err := io.ReadAll(body)
		if err != nil {
			return nil, nil, err
		}
		return append([]byte("head:"), head...), func(w io.Writer) error {
			_, err := w.Write(append(got, got...))
			return err
		}, nil
	})
	// A client's call (an open API lets it through).
	ctx := access.WithProof(t.Context(), access.Proof{Kind: access.ProofAnonymous})
	ans, err := r.call(ctx, "b:1", rcGet, []byte("h"), bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	if string(ans.head) != "head:h" || ans.body == nil {
		t.Fatalf("answer head %q, body %v", ans.head, ans.body)
	}
	defer ans.body.Close()
	got, err := io.ReadAll(ans.body)
	if err != nil || !bytes.Equal(got, append(big, big...)) {
		t.Fatalf("answer body of %d bytes (%v), want %d", len(got), err, 2*len(big))
	}
}

// A streamed answer that fails midway reads as the sender's error, typed,
// never as a short body that ended well.
func TestCallBodyFailingMidway(t *testing.T) {
	r := pipeRouter(t, func(context.Context, []byte, io.Reader) ([]byte, func(io.Writer) error, error) {
		return nil, func(w io.Writer) error {
			_, _ = w.Write([]byte("part"))
			return shard.ErrStopped
		}, nil
	})
	ans, err := r.call(t.Context(), "b:1", rcSnapshot, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ans.body.Close()
	got, err := io.ReadAll(ans.body)
	if string(got) != "part" || !errors.Is(err, shard.ErrStopped) {
		t.Fatalf("read %q, %v; want \"part\" then shard.ErrStopped", got, err)
	}
}

// The serving end drops a call whose caller left (its context ended): a
// stalled request holds nothing there.
func TestCallerLeavingEndsTheServedCall(t *testing.T) {
	ended := make(chan error, 1)
	r := pipeRouter(t, func(ctx context.Context, _ []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(access.WithProof(t.Context(), access.Proof{Kind: access.ProofAnonymous}), time.Minute)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := r.call(ctx, "b:1", rcWatch, nil, nil); err == nil {
		t.Fatal("a call whose caller left answered")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the served call ended with %v, want canceled (its caller left)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the served call still runs after its caller left")
	}
}

// A node of the previous version answers a route call with its own
// framing's refusal: the caller knows nothing was done there.
func TestPreviousVersionRefusalIsRecognised(t *testing.T) {
	r := testRouter(t, func(ctx context.Context, addr string) (net.Conn, error) {
		c1, c2 := net.Pipe()
		go func() {
			defer c2.Close()
			if _, _, err := readFrame(bufio.NewReader(c2)); err != nil {
				return
			}
			// What a node of commit 404f01c answers: group not hosted.
			b := encodeCallError(errors.Join(shard.ErrNotHosted))
			_, _ = c2.Write(append([]byte{statusErr, 0, 0, 0, byte(len(b))}, b...))
		}()
		return c1, nil
	})
	if _, err := r.call(t.Context(), "b:1", rcGet, nil, nil); !errors.Is(err, errPreviousVersion) {
		t.Fatalf("answered %v, want errPreviousVersion", err)
	}
}
