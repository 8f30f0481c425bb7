package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/shard"
)

// Forwarding lives here and only here. A handler always tries locally; when
// the backend answers with a *shard.RedirectError (the channel leader, the
// meta leader, or a node hosting the channel is elsewhere) the wrapper sends
// the original request, once, to that node over the cluster connection
// (Backend.DialNode), marked with the hop header. The far end serves it with
// the same handler (ServeForwarded) and, seeing the hop header, answers a
// redirect of its own with 503 instead of forwarding again.
//
// A redirect means the request was not proposed here (Backend's contract),
// so sending it on cannot apply a write twice. If the forward itself fails,
// a dial failure is retryable (nothing was sent): the handler runs again,
// for up to forwardRetryFor, and the backend, told by the failed dial,
// names the node as it knows it then (a leader that was killed is replaced
// by the one its replicas elected), instead of answering 503 for as long as
// its hint lived. A failure after sending a write is outcome_unknown
// (docs/design.md "D3").

// forwardRetryFor bounds how long a request whose forward reached nobody is
// routed again (each backend call keeps its own timeout);
// forwardRetryPause spaces the attempts: a dead node's dial fails at once,
// and its replicas need a moment to elect and learn the new leader.
const (
	forwardRetryFor   = 3 * time.Second
	forwardRetryPause = 50 * time.Millisecond
)

// dialError marks a failure to open the stream: nothing was sent.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("dial %s: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// dialNode is the forwarding transport's DialContext: addr is the cluster
// address the redirect named (the URL host).
func (s *Server) dialNode(ctx context.Context, _, addr string) (net.Conn, error) {
	c, err := s.b.DialNode(ctx, addr)
	if err != nil {
		return nil, &dialError{addr: addr, err: err}
	}
	return c, nil
}

// copyBuffers recycles the proxy's copy buffers: without a pool it
// allocates and clears 32 KiB per forwarded answer (measured ~5 % of a
// forwarding node's CPU under load).
var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// forward proxies r (whose body was buffered) to the node re names and
// copies its answer back. With mayRetry, a forward that reached nobody
// (the stream to the node could not be opened: nothing was sent, nothing
// was written to w) reports true instead of answering, so the caller can
// ask the backend again where to send it.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, re *shard.RedirectError, mayRetry bool) (unsent bool) {
	s.log.Debug("forwarding", "method", r.Method, "path", r.URL.EscapedPath(), "to", re.NodeID, "addr", re.Addr, "reason", re.Err)
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Path, RawPath and RawQuery stay as received: the key is
			// forwarded exactly as the client escaped it.
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = re.Addr
			pr.Out.Host = re.Addr
			pr.Out.Header.Set(api.HeaderForwarded, s.nodeID)
			// The body is already here: the client got its 100 Continue.
			pr.Out.Header.Del("Expect")
			pr.Out.ContentLength = int64(len(body))
			pr.Out.TransferEncoding = nil
			if len(body) == 0 {
				pr.Out.Body, pr.Out.GetBody = http.NoBody, nil
			} else {
				pr.Out.Body = io.NopCloser(bytes.NewReader(body))
				pr.Out.GetBody = func() (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(body)), nil
				}
			}
		},
		Transport:  s.fwd,
		BufferPool: copyBuffers,
		ModifyResponse: func(*http.Response) error {
			s.metrics.forwarded.WithLabelValues("ok").Inc()
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var de *dialError
			if mayRetry && errors.As(err, &de) && r.Context().Err() == nil {
				s.metrics.forwarded.WithLabelValues("retried").Inc()
				s.log.Debug("forward reached nobody; asking where to send it again", "to", re.NodeID, "error", err)
				unsent = true
				return
			}
			s.forwardFailed(w, r, re, err)
		},
		ErrorLog: s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	p.ServeHTTP(w, r)
	return unsent
}

// forwardFailed answers a forward that got no answer.
func (s *Server) forwardFailed(w http.ResponseWriter, r *http.Request, re *shard.RedirectError, err error) {
	var de *dialError
	switch {
	case errors.As(err, &de):
		s.metrics.forwarded.WithLabelValues("unreachable").Inc()
		err = fmt.Errorf("%w: node %s: %v", errUnreachable, re.NodeID, err)
	case r.Context().Err() != nil:
		s.metrics.forwarded.WithLabelValues("error").Inc()
		err = fmt.Errorf("server: client left during a forward: %w", r.Context().Err())
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		s.metrics.forwarded.WithLabelValues("error").Inc()
		err = fmt.Errorf("%w: node %s: %v", errUnreachable, re.NodeID, err)
	default:
		// The request may have reached the leader and been applied.
		s.metrics.forwarded.WithLabelValues("error").Inc()
		err = fmt.Errorf("%w: forwarded to node %s, which did not answer: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	s.log.Debug("forward failed", "method", r.Method, "to", re.NodeID, "error", err)
	writeError(w, err)
}
