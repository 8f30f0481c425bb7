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

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/shard"
)

// What is left of forwarding whole HTTP requests, for one version: nodes
// call each other (cluster/route.go) and this server only turns errors
// into statuses, but a node of the previous version takes no calls for
// reads, watches and meta writes. When the backend answers a
// *cluster.PreviousVersionError (the node that can answer runs that
// version, and refused the call unread), the request is forwarded there
// once, as that version expects: over the cluster connection
// (Backend.DialNode), marked with the hop header, which keeps the far end
// from forwarding it again. A failure after sending a write is
// outcome_unknown (docs/design.md "D3"). Remove this file, the hop header
// and Backend.DialNode with cluster/route.go's compatibility note.

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

// copyBuffers recycles the proxy's copy buffers.
var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// forward proxies r (whose body was buffered) to the node re names and
// copies its answer back.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, re *shard.RedirectError) {
	s.log.Debug("forwarding to a node of the previous version", "method", r.Method, "path", r.URL.EscapedPath(), "to", re.NodeID, "addr", re.Addr)
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
			s.forwardFailed(w, r, re, err)
		},
		ErrorLog: s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	p.ServeHTTP(w, r)
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
		// The request may have reached the node and been applied.
		s.metrics.forwarded.WithLabelValues("error").Inc()
		err = fmt.Errorf("%w: forwarded to node %s, which did not answer: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	s.log.Debug("forward failed", "method", r.Method, "to", re.NodeID, "error", err)
	writeError(w, err)
}
