package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
)

// Defaults and limits of the API (docs/api.md lists them).
const (
	DefaultMaxWatchers    = 4096
	DefaultRequestTimeout = 10 * time.Second

	// MaxWait caps a blocking read's wait; a request without wait= waits
	// this long. The effective wait is jittered by ±1/16 (as Consul does)
	// so that watchers started together do not all return together.
	MaxWait = 5 * time.Minute

	// MaxTxnBodyBytes bounds a transaction's JSON body. fsm.MaxTxnBytes (4
	// MiB of keys and values) is the real limit; base64 makes a value a
	// third larger in JSON, hence the margin.
	MaxTxnBodyBytes = 6 << 20
	// MaxJSONBodyBytes bounds every other request body.
	MaxJSONBodyBytes = 64 << 10

	// Connection limits and body deadlines (conns.go, readBody).
	DefaultIdleTimeout       = 60 * time.Second
	DefaultHeaderTimeout     = 10 * time.Second
	DefaultBodyTimeout       = 10 * time.Second
	DefaultBodyMinRate       = 32 << 10 // bytes per second
	DefaultMaxConnsPerClient = 512
	// DefaultMaxConns is the total when the file descriptor limit is not
	// known; otherwise half of that limit (MaxConnsForFDs).
	DefaultMaxConns = 4096

	// peerIdleTimeout closes a forwarded stream idle that long.
	peerIdleTimeout = 3 * time.Minute

	DefaultListLimit = 100
	MaxListLimit     = 1000
	DefaultReplicas  = 3
	MaxReplicas      = 7
)

// Config configures a Server. Only Backend is required.
type Config struct {
	Backend Backend
	// NodeID is this node's id, sent in the hop header of forwarded
	// requests.
	NodeID string
	// Token, when set, is the operator token; every /v1 request (but GET
	// /v1/health) and /metrics must then present it, or a channel token
	// the endpoint's rule accepts, as "Authorization: Bearer" (auth.go).
	Token  string
	Logger hclog.Logger // default: a null logger
	// Registry receives the server's metrics and is what GET /metrics
	// serves; default: a fresh registry (one per node: docs/design.md "D12").
	Registry *prometheus.Registry
	// MaxWatchers bounds the blocking reads waiting on this node at once;
	// beyond, 429. Default DefaultMaxWatchers.
	MaxWatchers int
	// RequestTimeout bounds each backend call of a request (a blocking
	// read's wait is bounded by MaxWait instead). Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// RateLimit bounds the requests per second of each client IP (token
	// bucket of RateBurst, default twice the rate); beyond, 429
	// rate_limited. 0 turns it off.
	RateLimit float64
	RateBurst int

	// Limits of the connections and bodies the node accepts.
	Limits
	// Internal serves the paths under cluster.InternalPrefix on the
	// listener of ServeForwarded (the node's own endpoints for its peers).
	Internal http.Handler
	// TLS, when set, makes Serve answer HTTPS only (HTTP/1.1: the
	// connection limits and body deadlines count one request per
	// connection at a time). Its certificate usually comes from
	// GetCertificate, so that it can be replaced while the node runs.
	// ServeForwarded is not concerned: the cluster connection has its own
	// authentication.
	TLS *tls.Config
}

// Limits are the HTTP API's connection limits and timeouts; a zero field
// takes its default.
type Limits struct {
	// Serve accepts at most MaxConns connections in all (default
	// DefaultMaxConns; negative: none) and MaxConnsPerClient from one
	// client address (default DefaultMaxConnsPerClient; negative: none)
	// (conns.go); a keep-alive connection idle for IdleTimeout is closed
	// (default DefaultIdleTimeout).
	MaxConns          int
	MaxConnsPerClient int
	IdleTimeout       time.Duration
	// A request head must arrive within HeaderTimeout (default
	// DefaultHeaderTimeout). A request body must arrive within BodyTimeout
	// plus its length at BodyMinRate bytes per second, and never stall for
	// longer than BodyTimeout (defaults DefaultBodyTimeout,
	// DefaultBodyMinRate); beyond, 408 request_timeout. An answer whose
	// writing makes no progress for BodyTimeout closes the connection.
	HeaderTimeout time.Duration
	BodyTimeout   time.Duration
	BodyMinRate   int64
}

// Server serves the HTTP API v1. Create it with New; it is an http.Handler.
type Server struct {
	b      Backend
	nodeID string
	// check holds the operator token and checks every credential
	// (auth.go); without a token the API is open.
	check   *access.Checker
	log     hclog.Logger
	metrics *metrics
	reg     *prometheus.Registry
	promH   http.Handler
	routes  map[string]*route // by template

	limiter *rateLimiter

	maxWatchers int64
	watchers    atomic.Int64
	timeout     time.Duration

	conns         *connLimiter
	idleTimeout   time.Duration
	headerTimeout time.Duration
	bodyTimeout   time.Duration
	bodyMinRate   int64
	internal      http.Handler
	tls           *tls.Config

	fwd *http.Transport // forwarding, dialled over the cluster connection

	closing context.Context // done once Shutdown starts: blocking reads answer early
	close   context.CancelFunc

	mu          sync.Mutex
	servers     []*http.Server // public: Shutdown and Close stop them
	peerServers []*http.Server // forwarded: only Close stops them
	closed      bool
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// New returns a Server. It panics when cfg.Backend is nil.
func New(cfg Config) *Server {
	if cfg.Backend == nil {
		panic("server: Config.Backend is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.MaxWatchers <= 0 {
		cfg.MaxWatchers = DefaultMaxWatchers
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	cfg.MaxConns = orDefault(cfg.MaxConns, DefaultMaxConns)
	cfg.MaxConnsPerClient = orDefault(cfg.MaxConnsPerClient, DefaultMaxConnsPerClient)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.HeaderTimeout = orDefault(cfg.HeaderTimeout, DefaultHeaderTimeout)
	cfg.BodyTimeout = orDefault(cfg.BodyTimeout, DefaultBodyTimeout)
	cfg.BodyMinRate = orDefault(cfg.BodyMinRate, DefaultBodyMinRate)
	s := &Server{
		b:             cfg.Backend,
		nodeID:        cfg.NodeID,
		log:           cfg.Logger.Named("http"),
		maxWatchers:   int64(cfg.MaxWatchers),
		timeout:       cfg.RequestTimeout,
		limiter:       newRateLimiter(cfg.RateLimit, cfg.RateBurst),
		idleTimeout:   cfg.IdleTimeout,
		headerTimeout: cfg.HeaderTimeout,
		bodyTimeout:   cfg.BodyTimeout,
		bodyMinRate:   cfg.BodyMinRate,
		internal:      cfg.Internal,
	}
	if cfg.TLS != nil {
		s.tls = cfg.TLS.Clone()
		s.tls.NextProtos = []string{"http/1.1"}
		if s.tls.MinVersion == 0 {
			s.tls.MinVersion = tls.VersionTLS12
		}
	}
	if s.nodeID == "" {
		s.nodeID = "unknown"
	}
	s.check = access.NewChecker(cfg.Token, cfg.Backend.Token, cfg.Backend.ChannelSettings)
	s.reg = cfg.Registry
	s.metrics = newMetrics(cfg.Registry, s.log)
	s.conns = newConnLimiter(max(cfg.MaxConns, 0), max(cfg.MaxConnsPerClient, 0), cfg.BodyTimeout, s.log.Named("conns"), s.metrics)
	s.conns.tls = s.tls
	s.promH = promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{})
	s.routes = s.routeTable()
	s.closing, s.close = context.WithCancel(context.Background())
	s.fwd = &http.Transport{
		DialContext:         s.dialNode,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     peerIdleTimeout / 2,
		DisableCompression:  true,
	}
	return s
}

// Handler returns the server as an http.Handler.
func (s *Server) Handler() http.Handler { return s }

// SetOperatorTokens replaces the operator tokens (one per line) that the
// API accepts, without a restart (access.Checker.SetOperatorTokens).
func (s *Server) SetOperatorTokens(tokens string) error { return s.check.SetOperatorTokens(tokens) }

// Serve answers API requests on l (the node's public HTTP listener) under
// the connection limits and timeouts of Config, until Shutdown or Close; it
// returns nil after them.
func (s *Server) Serve(l net.Listener) error {
	hs := s.httpServer(s, "public")
	hs.ConnState = s.conns.connState
	var ln net.Listener = &limitListener{Listener: l, l: s.conns}
	if s.tls != nil {
		// Outside the limits: a connection is admitted (or refused, with
		// an answer inside TLS: conns.go) before its handshake, which
		// http.Server then runs under its header timeout and, on a plain
		// HTTP request, answers 400 "Client sent an HTTP request to an
		// HTTPS server". http.Server sees the *tls.Conn, and connState
		// looks through it to the connection admitted.
		ln = tls.NewListener(ln, s.tls)
	}
	return s.serve(hs, ln, false)
}

// ServeForwarded answers the whole API requests that nodes of the previous
// version forward over the cluster connection (app streams), and their
// calls under cluster.InternalPrefix (Config.Internal). This version sends
// neither: its nodes call each other (cluster/route.go), so remove this
// with that file's compatibility note. Forwarded requests are served by
// the same handler but exempt from the per-client rate limit (the node the
// client talked to counted them); they carry the client's Authorization
// and are checked as usual, and are served here or refused, never sent on
// (cluster.ServeLocally). It is stopped by Close, not Shutdown: a node that
// stops keeps answering its peers until its groups have handed over. It
// returns nil after Close.
func (s *Server) ServeForwarded(l net.Listener) error {
	peer := s.PeerHandler()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.internal != nil && strings.HasPrefix(r.URL.Path, cluster.InternalPrefix) {
			s.internal.ServeHTTP(w, r)
			return
		}
		peer.ServeHTTP(w, r)
	})
	hs := s.httpServer(h, "forwarded")
	// Longer than the forwarding client keeps a connection idle (s.fwd), so
	// that the client, not this end, closes it: a write sent on a stream
	// this end had just closed would be outcome_unknown.
	hs.IdleTimeout = peerIdleTimeout
	return s.serve(hs, l, true)
}

func (s *Server) httpServer(h http.Handler, name string) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.headerTimeout,
		IdleTimeout:       s.idleTimeout,
		// No ReadTimeout or WriteTimeout: blocking reads answer after up to
		// MaxWait. Bodies get deadlines of their own (readBody), and
		// stalled writes fail on the public listener (sendConn).
		ErrorLog: s.log.Named(name).StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

func (s *Server) serve(hs *http.Server, l net.Listener, peers bool) error {
	s.mu.Lock()
	if s.closed || (!peers && s.closing.Err() != nil) {
		s.mu.Unlock()
		return nil
	}
	if peers {
		s.peerServers = append(s.peerServers, hs)
	} else {
		s.servers = append(s.servers, hs)
	}
	s.mu.Unlock()
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("server: serve HTTP on %s: %w", l.Addr(), err)
	}
	return nil
}

// Shutdown stops the public listeners started with Serve: blocking reads
// answer at once with the current value, then in-flight requests finish
// (bounded by ctx). The peers' listener keeps serving until Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.close()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	var errs []error
	for _, hs := range servers {
		if err := hs.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.fwd.CloseIdleConnections()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

// Close stops every listener at once, the peers' included, dropping
// requests in flight (a crash, or the end of a graceful stop).
func (s *Server) Close() error {
	s.mu.Lock()
	s.close()
	s.closed = true
	servers := append(s.servers, s.peerServers...)
	s.servers, s.peerServers = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, hs := range servers {
		if err := hs.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.fwd.CloseIdleConnections()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("server: close: %w", err)
	}
	return nil
}

// request is what a handler sees: the matched route's parameters, the
// buffered body and the query.
type request struct {
	r      *http.Request
	ch     string // the channel path segment, as received (escaped)
	rawKey string // the key part of the path, as received (escaped)
	body   []byte
	// stream is the body of a streaming endpoint (endpoint.stream),
	// bounded and under the body deadline; nil otherwise.
	stream io.Reader
	query  url.Values
}

// response is what a handler returns; the one wrapper writes it.
type response struct {
	status int // 0: 200
	header http.Header
	body   any    // written as JSON unless raw
	raw    []byte // written as application/octet-stream when isRaw
	isRaw  bool
	// content, when set, writes a raw answer itself after the headers
	// are copied (http.ServeContent: ranges and conditional requests).
	content func(w http.ResponseWriter)
}

func jsonResponse(status int, body any) *response {
	return &response{status: status, body: body, header: http.Header{}}
}

// handlerFunc serves one method of one route.
type handlerFunc func(ctx context.Context, req *request) (*response, error)

// ServeHTTP is the one wrapper every request goes through: recover,
// metrics, auth, routing, body buffering, the handler, forwarding, and
// writing the answer or the error.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	routeName := "unmatched"
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			s.log.Error("panic serving a request", "method", r.Method, "route", routeName,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if !rec.wroteHeader {
				writeError(rec, errors.New("server: internal error (the node logged it)"))
			}
		}
		code := rec.status
		if code == 0 {
			code = http.StatusOK
		}
		elapsed := time.Since(start)
		s.metrics.requests.WithLabelValues(methodLabel(r.Method), routeName, strconv.Itoa(code)).Inc()
		s.metrics.seconds.WithLabelValues(routeName).Observe(elapsed.Seconds())
		s.log.Debug("request", "method", r.Method, "route", routeName, "status", code,
			"duration", elapsed, "forwarded_by", r.Header.Get(api.HeaderForwarded))
		if p == http.ErrAbortHandler {
			panic(p) // let net/http abort the connection
		}
	}()
	s.dispatch(rec, r, &routeName)
}

func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, routeName *string) {
	path := r.URL.EscapedPath()
	rt, ch, rawKey := s.match(path)
	limit := int64(MaxJSONBodyBytes)
	if rt != nil {
		*routeName = rt.template
		if ep, ok := rt.methods[r.Method]; ok && ep.maxBody > 0 {
			limit = ep.maxBody
		}
	}
	deadline := s.armBody(w, r, limit)
	if s.limiter != nil && !fromPeer(r) && !s.limiter.allow(clientIP(r)) {
		writeError(w, refuse(errRateLimited, "more than %g requests per second from %s", float64(s.limiter.limit), clientIP(r)))
		return
	}
	if !s.admit(w, r, rt, ch, rawKey, path) {
		return
	}
	if rt == nil {
		writeError(w, refuse(errRouteNotFound, "no endpoint %s", path))
		return
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	ep, ok := rt.methods[method]
	if !ok {
		w.Header().Set("Allow", rt.allow())
		writeError(w, refuse(errMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, rt.template, rt.allow()))
		return
	}
	query, err := parseQuery(r.URL.RawQuery, ep.params)
	if err != nil {
		writeError(w, err)
		return
	}
	if ep.raw != nil {
		// A raw endpoint streams its own body; it carries the client's
		// proof all the same, for the route calls it makes.
		ep.raw.ServeHTTP(w, r.WithContext(access.WithProof(r.Context(), proofOf(r))))
		return
	}
	var body []byte
	var stream io.Reader
	if ep.stream {
		stream = s.streamBody(w, r, ep.maxBody, deadline)
	} else if body, err = s.readBody(w, r, ep.maxBody, ep.tooLarge, deadline); err != nil {
		writeError(w, err)
		return
	}
	req := &request{r: r, ch: ch, rawKey: rawKey, body: body, stream: stream, query: query}
	resp, err := ep.h(access.WithProof(r.Context(), proofOf(r)), req)
	var pv *cluster.PreviousVersionError
	if errors.As(err, &pv) && !fromPeer(r) {
		// Served by a node of the previous version, which takes no
		// route calls: forward the request as it expects (forward.go).
		// Go's HTTP client would resend a request carrying an
		// Idempotency-Key by itself: the hop carries it under another name.
		hideIdemKey(r)
		s.forward(w, r, body, pv.Redirect)
		return
	}
	if err != nil {
		if status, _, _ := statusOf(err); status >= 500 {
			s.log.Debug("request failed", "method", r.Method, "route", rt.template, "error", err)
		}
		writeError(w, err)
		return
	}
	writeResponse(w, resp)
}

// needsAuth says whether the token protects the request: every /v1 path
// but GET /v1/health (load balancers probe it), and /metrics.
func needsAuth(r *http.Request, path string) bool {
	if path == "/v1/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		return false
	}
	return path == "/v1" || strings.HasPrefix(path, "/v1/") || path == "/metrics" || strings.HasPrefix(path, "/debug/pprof/")
}

// bodyDeadline is when a body of n bytes must have arrived: BodyTimeout
// plus n at BodyMinRate (nginx's client_body_timeout, scaled).
func (s *Server) bodyDeadline(start time.Time, n int64) time.Time {
	return start.Add(s.bodyTimeout + time.Duration(float64(n)/float64(s.bodyMinRate)*float64(time.Second)))
}

// armBody gives a request that has a body its overall deadline before
// anything else runs, so that a refusal that leaves the body unread (401,
// 404, 413) cannot hold the connection while net/http discards the rest.
// It returns the deadline, zero when the request has no body.
func (s *Server) armBody(w http.ResponseWriter, r *http.Request, limit int64) time.Time {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return time.Time{}
	}
	n := r.ContentLength
	if n < 0 || n > limit {
		n = limit // chunked, or refused unread: what may still come
	}
	d := s.bodyDeadline(time.Now(), n)
	if err := http.NewResponseController(w).SetReadDeadline(d); err != nil {
		return time.Time{} // not a connection (a test's recorder)
	}
	return d
}

// streamBody is the body of a streaming endpoint: at most limit bytes,
// under the same deadline and stall rule as readBody.
func (s *Server) streamBody(w http.ResponseWriter, r *http.Request, limit int64, deadline time.Time) io.Reader {
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	if !deadline.IsZero() {
		body = &stallReader{r: body, rc: http.NewResponseController(w), stall: s.bodyTimeout, deadline: deadline}
	}
	return body
}

// readBody buffers the body (a handler takes it whole), refusing
// one over limit with tooLarge and one that does not arrive by deadline
// (armBody), or stalls for BodyTimeout, with 408.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64, tooLarge error, deadline time.Time) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, refuse(tooLarge, "request body of %d bytes is over the limit of %d bytes", r.ContentLength, limit)
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	var rc *http.ResponseController
	if !deadline.IsZero() {
		rc = http.NewResponseController(w)
		body = &stallReader{r: body, rc: rc, stall: s.bodyTimeout, deadline: deadline}
	}
	b, err := io.ReadAll(body)
	if err == nil && rc != nil {
		// The body is in: the handler's own time is not the client's (and
		// net/http's background read must not time out under it). On an
		// error the deadline stays: net/http may still read the rest of
		// the body to discard it, and must not wait for ever.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, refuse(tooLarge, "request body is over the limit of %d bytes", limit)
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.Header().Set("Connection", "close")
			s.metrics.timeouts.WithLabelValues(listenerLabel(r)).Inc()
			return nil, refuse(errBodyTimeout, "the request body did not arrive in time: %d bytes came, of %s; a body must arrive within %s plus its length at %d bytes/s, and never stall for %s",
				len(b), declared(r.ContentLength), s.bodyTimeout, s.bodyMinRate, s.bodyTimeout)
		}
		return nil, invalid("cannot read the request body: %v", err)
	}
	return b, nil
}

func declared(n int64) string {
	if n < 0 {
		return "a chunked body"
	}
	return strconv.FormatInt(n, 10)
}

func listenerLabel(r *http.Request) string {
	if fromPeer(r) {
		return "forwarded"
	}
	return "public"
}

// stallReader moves the read deadline forward as the body arrives: never
// past the body's overall deadline, and never more than stall ahead, so a
// body that stops coming fails within stall. The deadline is re-armed when
// a quarter of stall has passed, not on every read.
type stallReader struct {
	r        io.Reader
	rc       *http.ResponseController
	stall    time.Duration
	deadline time.Time
	armed    time.Time
}

func (sr *stallReader) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(sr.armed) > sr.stall/4 {
		sr.armed = now
		d := now.Add(sr.stall)
		if d.After(sr.deadline) {
			d = sr.deadline
		}
		_ = sr.rc.SetReadDeadline(d)
	}
	return sr.r.Read(p)
}

func writeResponse(w http.ResponseWriter, resp *response) {
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	status := resp.status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case resp.content != nil:
		resp.content(w)
	case resp.isRaw:
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(resp.raw)))
		w.WriteHeader(status)
		_, _ = w.Write(resp.raw)
	case resp.body == nil:
		w.WriteHeader(status)
	default:
		b, err := json.Marshal(resp.body)
		if err != nil {
			writeError(w, fmt.Errorf("server: encode answer: %w", err))
			return
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(append(b, '\n'))
	}
}

// recorder remembers the status for metrics and whether anything was
// written (a panic after that cannot send an error body).
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader && code >= 200 { // 1xx are interim, not the answer
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (flushing, used by the reverse proxy)
// reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// opContext bounds one backend call.
func (s *Server) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}
